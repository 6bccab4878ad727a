#!/usr/bin/env python3
"""dpm_ref.py - an independent float64 reference of DPM-Solver++(2M) for
test_diffusion.c, written from the paper (Lu et al. 2022, "DPM-Solver++:
Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
Algorithm 2, data prediction, multistep second order).

Usage: dpm_ref.py SCHEDULE N X_T...
  SCHEDULE  squaredcos_cap_v2 or linear (1000 base steps)
  N         the respacing "N": N timesteps spread evenly over 0..999
  X_T       starting values, one sample each

The denoiser is the test's nonlinear one: x0(x, t) = clip(1.3 tanh(0.8 x +
0.0005 t), -1, 1) with t the original timestep. Prints one line per X_T:
the final sample, then the sample at the smallest kept timestep."""
import math
import sys

import numpy as np

BASE = 1000


def betas_of(schedule):
    if schedule == "squaredcos_cap_v2":
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - f((i + 1) / BASE) / f(i / BASE), 0.999) for i in range(BASE)])
    if schedule == "linear":
        scale = 1000 / BASE
        return np.linspace(scale * 0.0001, scale * 0.02, BASE)
    raise SystemExit("unknown schedule " + schedule)


def kept_steps(n):
    # N positions over one section of BASE steps, stride (BASE-1)/(N-1),
    # rounded half to even (Python's round)
    stride = (BASE - 1) / (n - 1)
    return sorted({round(i * stride) for i in range(n)})


def denoise(x, t):
    return np.clip(1.3 * np.tanh(0.8 * x + 0.0005 * t), -1.0, 1.0)


def solve(schedule, n, x_t):
    abar = np.cumprod(1 - betas_of(schedule))
    ts = kept_steps(n)[::-1]  # from the noisiest down
    # the paper's alpha_t, sigma_t and half-log-SNR lambda_t of each level;
    # after the last kept timestep comes the clean sample (alpha 1, sigma 0)
    alpha = [math.sqrt(abar[t]) for t in ts]
    sigma = [math.sqrt(1 - abar[t]) for t in ts]
    lam = [math.log(a / s) for a, s in zip(alpha, sigma)]
    x = np.array(x_t, dtype=np.float64)
    d_prev = None
    before_last = None
    for i, t in enumerate(ts):
        d = denoise(x, t)
        if i == len(ts) - 1:  # to sigma = 0: the solver's step is x = x0
            before_last = x.copy()
            x = d
            break
        h = lam[i + 1] - lam[i]
        if d_prev is None:  # the first step: DPM-Solver++ 1 (first order)
            big_d = d
        else:  # Algorithm 2: r_i = h_{i-1} / h_i
            r = (lam[i] - lam[i - 1]) / h
            big_d = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
        x = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * math.expm1(-h) * big_d
        d_prev = d
    return x, before_last


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    x, before = solve(sys.argv[1], int(sys.argv[2]), [float(v) for v in sys.argv[3:]])
    for a, b in zip(x, before):
        print("%.12g %.12g" % (a, b))


if __name__ == "__main__":
    main()
