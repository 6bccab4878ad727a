"""Gaussian diffusion as Karlo configures it (improved DDPM, Nichol &
Dhariwal 2021): squaredcos_cap_v2 betas over 1000 steps, timestep
respacing, posterior q(x_{t-1}|x_t,x_0), p_mean_variance for eps / x0
prediction with fixed-small, fixed-large or learned-range variance, the
training losses and ancestral sampling.

Schedule arrays are float64; a coefficient gathered for a batch of
timesteps is cast to float32 before it multiplies a tensor (as Karlo)."""
import math

import numpy as np
import torch


def named_betas(name, steps):
    if name == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - f((i + 1) / steps) / f(i / steps), 0.999) for i in range(steps)],
                        dtype=np.float64)
    if name == "linear":
        s = 1000 / steps
        return np.linspace(s * 0.0001, s * 0.02, steps, dtype=np.float64)
    raise ValueError(f"unknown noise_schedule {name!r}")


def space_timesteps(steps, spec):
    """Kept timesteps for a respacing spec: "" (all), "N" or "a,b,c" (even
    strides per section, Python round), "ddimN" (integer stride), "fast27"."""
    if not spec:
        return list(range(steps))
    if spec.startswith("ddim"):
        want = int(spec[4:])
        for stride in range(1, steps):
            if len(range(0, steps, stride)) == want:
                return list(range(0, steps, stride))
        raise ValueError(f"cannot make {want} steps with an integer stride")
    if spec == "fast27":
        s = set(space_timesteps(steps, "10,10,3,2,2"))
        s.remove(steps - 1)
        s.add(steps - 3)
        return sorted(s)
    counts = [int(x) for x in spec.split(",")]
    size_per, extra = divmod(steps, len(counts))
    start, out = 0, []
    for i, c in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < c:
            raise ValueError(f"cannot divide a section of {size} steps into {c}")
        stride = 1 if c <= 1 else (size - 1) / (c - 1)
        cur = 0.0
        for _ in range(c):
            out.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(out))


def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def _approx_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_loglik(x, means, log_scales):
    """log-likelihood of x in [-1,1] (8-bit bins) under N(means, exp(log_scales)^2)."""
    c = x - means
    inv = torch.exp(-log_scales)
    cdf_plus = _approx_cdf(inv * (c + 1.0 / 255))
    cdf_min = _approx_cdf(inv * (c - 1.0 / 255))
    log_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_plus, torch.where(x > 0.999, log_1m_min, log_delta))


def mean_flat(x):
    return x.mean(dim=list(range(1, x.ndim)))


class Diffusion:
    """mean_type: 'eps' or 'x0'; var_type: 'small', 'large' or 'learned_range'.
    timestep_map[i] = original step of spaced index i (what the network sees)."""

    def __init__(self, betas, mean_type, var_type, timestep_map=None):
        b = np.asarray(betas, dtype=np.float64)
        self.T = len(b)
        self.mean_type, self.var_type = mean_type, var_type
        self.timestep_map = torch.tensor(timestep_map if timestep_map is not None else range(self.T))
        a = 1.0 - b
        acp = np.cumprod(a)
        acp_prev = np.append(1.0, acp[:-1])
        self.betas = b
        self.alphas_cumprod = acp
        self.alphas_cumprod_prev = acp_prev
        self.sqrt_alphas_cumprod = np.sqrt(acp)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - acp)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / acp)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / acp - 1)
        pv = b * (1.0 - acp_prev) / (1.0 - acp)
        self.posterior_variance = pv
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]))
        self.posterior_mean_coef1 = b * np.sqrt(acp_prev) / (1.0 - acp)
        self.posterior_mean_coef2 = (1.0 - acp_prev) * np.sqrt(a) / (1.0 - acp)
        self.log_betas = np.log(b)
        large = np.append(pv[1], b[1:])
        self.large_variance = large
        self.large_log_variance = np.log(large)

    @classmethod
    def from_config(cls, d, respacing=None):
        """Karlo's create_gaussian_diffusion from the yaml 'diffusion' section."""
        base = named_betas(d["noise_schedule"], d["steps"])
        spec = d.get("timestep_respacing", "") if respacing is None else respacing
        keep = space_timesteps(d["steps"], spec)
        acp = np.cumprod(1.0 - base)
        betas, last = [], 1.0
        for i in keep:
            betas.append(1 - acp[i] / last)
            last = acp[i]
        mean = "x0" if d["predict_xstart"] else "eps"
        var = "learned_range" if d["learn_sigma"] else ("small" if d["sigma_small"] else "large")
        return cls(betas, mean, var, keep)

    def _ex(self, arr, t, x):
        v = torch.from_numpy(arr).to(t.device)[t].float()
        return v.view(-1, *([1] * (x.ndim - 1)))

    # forward process
    def q_sample(self, x0, t, noise):
        return self._ex(self.sqrt_alphas_cumprod, t, x0) * x0 + self._ex(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior(self, x0, xt, t):
        mean = self._ex(self.posterior_mean_coef1, t, xt) * x0 + self._ex(self.posterior_mean_coef2, t, xt) * xt
        z = torch.zeros_like(xt)
        return mean, self._ex(self.posterior_variance, t, xt) + z, self._ex(self.posterior_log_variance_clipped, t, xt) + z

    def xstart_from_eps(self, xt, t, eps):
        return self._ex(self.sqrt_recip_alphas_cumprod, t, xt) * xt - self._ex(self.sqrt_recipm1_alphas_cumprod, t, xt) * eps

    # reverse process
    def p_mean_variance(self, out, x, t, clip_denoised=True, denoised_fn=None):
        """out: the network output for x at spaced index t (6 channels for
        learned_range). Returns dict mean, variance, log_variance, pred_xstart."""
        c = x.shape[1]
        z = torch.zeros_like(x)
        if self.var_type == "learned_range":
            out, v = out[:, :c], out[:, c:]
            lo = self._ex(self.posterior_log_variance_clipped, t, x)
            hi = self._ex(self.log_betas, t, x)
            frac = (v + 1) / 2
            logvar = frac * hi + (1 - frac) * lo
            var = torch.exp(logvar)
        elif self.var_type == "small":
            var = self._ex(self.posterior_variance, t, x) + z
            logvar = self._ex(self.posterior_log_variance_clipped, t, x) + z
        else:
            var = self._ex(self.large_variance, t, x) + z
            logvar = self._ex(self.large_log_variance, t, x) + z
        x0 = out if self.mean_type == "x0" else self.xstart_from_eps(x, t, out)
        if denoised_fn is not None:
            x0 = denoised_fn(x0)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(x0, x, t)
        return {"mean": mean, "variance": var, "log_variance": logvar, "pred_xstart": x0}

    def p_sample(self, out, x, t, noise, clip_denoised=True, denoised_fn=None):
        r = self.p_mean_variance(out, x, t, clip_denoised, denoised_fn)
        nz = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
        return r["mean"] + nz * torch.exp(0.5 * r["log_variance"]) * noise, r

    @torch.no_grad()
    def sample_loop(self, model_fn, shape, draw, device="cpu", clip_denoised=True,
                    denoised_fn=None, last_model_fn=None, trace=None):
        """Ancestral sampling over the (spaced) steps. model_fn(x, t_model)
        gets ORIGINAL timesteps; last_model_fn (if given) runs the final step
        (the improved-SR layout). draw(shape) gives each normal draw, in
        Karlo's order: x_T first, then one per step (also at t = 0).
        trace, if a list, receives (t, x_in, sample, pred_xstart) per step."""
        x = draw(shape).to(device)
        for i in reversed(range(self.T)):
            t = torch.full((shape[0],), i, dtype=torch.long, device=device)
            fn = last_model_fn if (last_model_fn is not None and i == 0) else model_fn
            out = fn(x, self.timestep_map.to(device)[t])
            noise = draw(shape).to(device)
            xn, r = self.p_sample(out, x, t, noise, clip_denoised, denoised_fn)
            if trace is not None:
                trace.append((i, x, xn, r["pred_xstart"]))
            x = xn
        return x

    # training losses (t: indices into this process, normally unspaced)
    def loss_mean(self, out, x0, xt, t, noise):
        """MSE of the mean prediction against its target (x0 or eps)."""
        return mean_flat(((x0 if self.mean_type == "x0" else noise) - out) ** 2)

    def loss_hybrid(self, out, x0, xt, t, noise):
        """Improved DDPM's hybrid objective for learned-range variance: MSE
        of the mean prediction (x0 or eps) + the VLB term with the mean's
        gradient stopped (L_t as KL in bits, L_0 as discretized NLL), times
        T/1000 (RESCALED_MSE). Returns (loss, mse, vb) per sample."""
        c = x0.shape[1]
        m, v = out[:, :c], out[:, c:]
        mse = self.loss_mean(m, x0, xt, t, noise)
        frozen = torch.cat([m.detach(), v], dim=1)
        p = self.p_mean_variance(frozen, xt, t, clip_denoised=False)
        tm, _, tlv = self.q_posterior(x0, xt, t)
        kl = mean_flat(normal_kl(tm, tlv, p["mean"], p["log_variance"])) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_loglik(x0, p["mean"], 0.5 * p["log_variance"])) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl) * (self.T / 1000.0)
        return mse + vb, mse, vb
