"""The four training stages (clip, prior, decoder, sr): resumable from
train/runs/<stage>/ckpt.pt (saved every few minutes, at the end and on
SIGTERM/SIGINT), seeded per step, losses logged to train/runs/<stage>/log.txt.

Every step draws its batch and noise from generators seeded by (seed, step),
so a resumed run continues the same sequence of batches."""
import math
import os
import signal
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import config, data, features, grammar
from .clip import CLIP, normalize_images
from .diffusion import Diffusion
from .prior import PriorDiffusionModel
from .tokenizer import shapes_tokenizer
from .unet import ImprovedSupRes64to256ProgressiveModel, Text2ImProgressiveModel

RUNS = os.path.join(data.HERE, "runs")


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Logger:
    def __init__(self, path):
        self.path = path

    def __call__(self, msg):
        line = time.strftime("%Y-%m-%d %H:%M:%S ") + msg
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


class Stage:
    """Subclasses define setup() (data, model, self.params), loss(step, gen)
    -> (loss tensor, {name: float}), and optionally evaluate()."""
    name = ""
    ema_module = None  # the module whose EMA is kept (None: no EMA)

    def __init__(self, seed=config.SEED):
        self.seed = seed
        self.dir = os.path.join(RUNS, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.log = Logger(os.path.join(self.dir, "log.txt"))
        self.dev = device()
        self.hp = config.TRAIN[self.name]
        self.step = 0
        self.elapsed = 0.0
        self.ema_from = 0  # the step the EMA of the weights started at
        self.warm_from = 0  # the step the learning-rate warmup started at
        self.ema_restart = False  # restart the EMA from the resumed weights (train.py --ema-restart)

    # checkpoint -------------------------------------------------------
    def state(self):
        s = {"step": self.step, "elapsed": self.elapsed, "seed": self.seed, "warm_from": self.warm_from,
             "model": self.module.state_dict(), "opt": self.opt.state_dict()}
        if self.ema is not None:
            s["ema"], s["ema_from"] = self.ema, self.ema_from
        return s

    def save(self):
        path = os.path.join(self.dir, "ckpt.pt")
        s = self.state()
        s.update(self.extra_state())
        torch.save(s, path + ".tmp")
        os.replace(path + ".tmp", path)

    def extra_state(self):
        return {}

    def load_extra(self, ck):
        pass

    def restore(self):
        path = os.path.join(self.dir, "ckpt.pt")
        if not os.path.exists(path):
            return False
        ck = torch.load(path, map_location="cpu")
        self.module.load_state_dict(ck["model"])
        self.step, self.elapsed, self.seed = ck["step"], ck["elapsed"], ck["seed"]
        self.warm_from = ck.get("warm_from", 0)
        if "opt" in ck:
            self.opt.load_state_dict(ck["opt"])
        else:  # a slim checkpoint (train.py slim): new AdamW moments, warmed up again
            self.warm_from = self.step
            self.log(f"{self.name}: step {self.step}: no optimizer state in the checkpoint; AdamW warms up anew")
        if self.ema is not None and "ema" in ck:
            self.ema = {k: v.to(self.dev) for k, v in ck["ema"].items()}
            self.ema_from = ck.get("ema_from", 0)
        elif self.ema is not None:  # a slim checkpoint: its weights are the EMA
            self.ema = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            self.ema_from = ck.get("ema_from", 0)
        was, now = (c.get("config", {}).get("diffusion", {}).get("predict_xstart") for c in (ck, self.extra_state()))
        if self.ema is not None and was is not None and now is not None and was != now:
            # The checkpoint was trained for the other mean prediction (x0 or
            # eps): train on from its weights, with a fresh EMA of them.
            self.log(f"{self.name}: step {self.step}: mean prediction changed to {'x0' if now else 'eps'}; EMA restarted")
            self.ema = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            self.ema_from = self.step
        if self.ema is not None and self.ema_restart:
            self.ema = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            self.ema_from = self.step
            self.log(f"{self.name}: step {self.step}: EMA restarted from the resumed weights (--ema-restart)")
        self.load_extra(ck)
        return True

    # training ---------------------------------------------------------
    def build_opt(self):
        decay, no_decay = [], []
        for n, p in self.module.named_parameters():
            (decay if p.ndim >= 2 and "embedding" not in n else no_decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.hp["wd"]},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=self.hp["lr"], betas=(0.9, 0.99))
        self.ema = None
        if self.hp["ema"] > 0:
            self.ema = {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def clock(self):
        """Training time in seconds: on CPU the process's CPU time per thread,
        so that a machine shared with other work (or a paused job) trains the
        same number of steps per planned minute as an idle one; on CUDA the
        wall clock."""
        if self.dev.type == "cpu":
            return time.process_time() / torch.get_num_threads()
        return time.time()

    def lr_at(self, frac):
        warm = min(1.0, (self.step - self.warm_from + 1) / self.hp["warmup"])
        frac = min(max(frac, 0.0), 1.0)
        return self.hp["lr"] * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def update_ema(self):
        n = self.step - self.ema_from
        d = min(self.hp["ema"], (1 + n) / (10 + n))
        with torch.no_grad():
            for k, v in self.module.state_dict().items():
                if v.dtype.is_floating_point:
                    self.ema[k].mul_(d).add_(v, alpha=1 - d)
                else:
                    self.ema[k].copy_(v)

    def evaluate(self):
        pass

    def run(self, minutes=None, total_minutes=None, plan_minutes=None, ckpt_every=300.0,
            total_steps=None, plan_steps=None):
        """Train to a budget: total_steps (the learning-rate schedule over
        plan_steps, default total_steps), or minutes more / total_minutes
        in all (schedule over plan_minutes), or by default the stage's
        planned steps (config.TRAIN). A step budget trains the same model
        on any machine and any number of threads; a minute budget does not."""
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % (2 ** 32))
        self.setup()
        self.module.to(self.dev)
        self.build_opt()
        resumed = self.restore()
        first = self.step
        if minutes is None and total_minutes is None:
            total_steps = total_steps or self.hp["steps"]
        if total_steps is not None:
            plan = plan_steps or total_steps
            done, frac = (lambda: self.step >= total_steps), (lambda: self.step / plan)
            goal = f"step {total_steps} (lr plan {plan} steps)"
        else:
            target = 60.0 * (total_minutes if total_minutes is not None else self.elapsed / 60 + minutes)
            plan = 60.0 * (plan_minutes or total_minutes or minutes)
            done, frac = (lambda: self.elapsed >= target), (lambda: self.elapsed / plan)
            goal = f"{target / 60:.1f} min (lr plan {plan / 60:.0f} min)"
        nparam = sum(p.numel() for p in self.module.parameters())
        self.log(f"{self.name}: {'resumed at step %d (%.1f min)' % (self.step, self.elapsed / 60) if resumed else 'new run'}; "
                 f"{nparam / 1e6:.2f}M params; training to {goal}; "
                 f"device {self.dev}, {torch.get_num_threads()} threads, seed {self.seed}")
        stop = {"flag": False}

        def on_signal(sig, frame):
            stop["flag"] = True
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        acc, nacc = {}, 0
        t_last_ckpt = t_last_log = time.time()
        self.module.train()
        try:
            while not done() and not stop["flag"]:
                t0 = self.clock()
                for g in self.opt.param_groups:
                    g["lr"] = self.lr_at(frac())
                torch.manual_seed(self.seed * 1000003 + self.step)
                gen = torch.Generator().manual_seed(self.seed * 7919 + self.step)
                loss, stats = self.loss(self.step, gen)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
                self.opt.step()
                self.after_step()
                self.step += 1
                if self.ema is not None:
                    self.update_ema()
                self.elapsed += self.clock() - t0
                stats["gnorm"] = float(gn)
                for k, v in stats.items():
                    acc[k] = acc.get(k, 0.0) + v
                nacc += 1
                now = time.time()
                if now - t_last_log >= 60 or self.step in (1, 10) or done():
                    msg = " ".join(f"{k}={v / nacc:.4f}" for k, v in acc.items())
                    self.log(f"step {self.step} t={self.elapsed / 60:.1f}min lr={self.opt.param_groups[0]['lr']:.2e} "
                             f"{msg} ({nacc / max(now - t_last_log, 1e-9):.2f} steps/s)")
                    acc, nacc, t_last_log = {}, 0, now
                if now - t_last_ckpt >= ckpt_every:
                    self.save()
                    t_last_ckpt = now
        finally:
            trained = self.step != first or not resumed  # a finished stage's checkpoint stays as it was
            if trained:
                self.save()
            for s, h in old.items():
                signal.signal(s, h)
        self.log(f"{self.name}: " + (f"checkpoint at step {self.step} ({self.elapsed / 60:.1f} min)" if trained
                                     else f"already at step {self.step}")
                 + (" (stopped by signal)" if stop["flag"] else ""))
        if not stop["flag"]:
            self.module.eval()
            self.evaluate()
        return not stop["flag"]

    def after_step(self):
        pass


def scenes():
    d = config.DATA["scenes"]
    return data.dataset("scenes", d["n"], d["seed"], d["size"])


def to_pm1(u8):
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# --------------------------------------------------------------------------
class ClipStage(Stage):
    """Contrastive CLIP: symmetric cross-entropy over the batch, where every
    pair whose captions mean the same (grammar.meaning) counts as a positive.

    Half of each batch are hard negatives of the other half: for every
    random scene, a scene of a neighbouring meaning (grammar.neighbours: the
    relation's objects or colours swapped, another number). With random
    batches alone the two objects of a relation are a bag of words: after
    863 steps the image embedding told "A above B" from "B above A" in 49 %
    of held-out scenes (chance). With text_neg, every relation caption's
    opposite ("A below B") is also a text column of the image-to-text loss:
    95.6 % after 1 094 more steps (55 % with hard scenes alone)."""
    name = "clip"

    def setup(self):
        self.tok = shapes_tokenizer()
        self.cfg = config.clip_config(self.tok.vocab_size)
        self.module = CLIP(self.cfg)
        caps, self.images = scenes()
        self.uniq = sorted(set(caps))
        # meanings: id per scene, the scenes of each (sorted, with offsets),
        # and each meaning's neighbours with their weights (padded rows)
        means = sorted({grammar.meaning(c) for c in grammar.all_captions()})
        mid = {m: i for i, m in enumerate(means)}
        idx = {c: i for i, c in enumerate(self.uniq)}
        self.cap_id = torch.tensor([idx[c] for c in caps])
        self.tokens, _ = self.tok.tokenize(self.uniq, self.cfg["context_length"])
        # text negatives: each relation caption's opposite ("A below B" for
        # "A above B"), tokenized, with its meaning; -1 where there is none
        opp = [grammar.opposite(c) for c in self.uniq]
        self.opp_tokens, _ = self.tok.tokenize([o or "" for o in opp], self.cfg["context_length"])
        self.opp_mean = torch.tensor([mid[grammar.meaning(o)] if o else -1 for o in opp])
        self.images_t = torch.from_numpy(self.images)
        self.mean_id = torch.tensor([mid[grammar.meaning(c)] for c in caps])
        self.by_mean = torch.argsort(self.mean_id, stable=True)
        counts = torch.bincount(self.mean_id, minlength=len(means))
        self.mean_off, self.mean_n = torch.cumsum(counts, 0) - counts, counts
        nb = [[(mid[n], w) for n, w in grammar.neighbours(m) if counts[mid[n]] > 0] or [(mid[m], 1.0)]
              for m in means]  # (a meaning with no neighbour in the data pairs with itself)
        width = max(len(r) for r in nb)
        self.nb_id = torch.zeros(len(means), width, dtype=torch.long)
        self.nb_w = torch.zeros(len(means), width)
        for i, r in enumerate(nb):
            for j, (n, w) in enumerate(r):
                self.nb_id[i, j], self.nb_w[i, j] = n, w

    def batch(self, gen):
        """Scene indices: random ones, then a hard negative of each (config
        TRAIN clip "hard": the fraction of the batch that are negatives)."""
        b = self.hp["batch"]
        nh = int(b * self.hp.get("hard", 0.0))
        idx = torch.randperm(len(self.cap_id), generator=gen)[:b - nh]
        if nh == 0:
            return idx
        m = self.mean_id[idx[:nh]]
        n = self.nb_id[m, torch.multinomial(self.nb_w[m], 1, generator=gen)[:, 0]]
        k = (torch.rand(nh, generator=gen) * self.mean_n[n]).long()
        return torch.cat([idx, self.by_mean[self.mean_off[n] + k]])

    def extra_state(self):
        return {"config": self.cfg, "merges": self.tok.text()}

    def loss(self, step, gen):
        idx = self.batch(gen)
        b = len(idx)
        cid = self.cap_id[idx]
        uc, inv = torch.unique(cid, return_inverse=True)
        img = normalize_images(self.images_t[idx].to(self.dev))
        ie = self.module.encode_image(img)
        te = self.module.encode_text(self.tokens[uc].to(self.dev))[inv.to(self.dev)]
        ie = ie / ie.norm(dim=1, keepdim=True)
        te = te / te.norm(dim=1, keepdim=True)
        scale = self.module.logit_scale.exp()
        logits = scale * ie @ te.t()
        mid = self.mean_id[idx]
        pos = (mid[:, None] == mid[None, :]).float().to(self.dev)
        target = pos / pos.sum(1, keepdim=True)
        t2i = torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean()
        if self.hp.get("text_neg"):
            # image -> text also against the opposites of the batch's relation
            # captions (a positive where an image of the batch means that)
            ou = uc[self.opp_mean[uc] >= 0]
            if len(ou):
                oe = self.module.encode_text(self.opp_tokens[ou].to(self.dev))
                oe = oe / oe.norm(dim=1, keepdim=True)
                logits_x = torch.cat([logits, scale * ie @ oe.t()], 1)
                pos_x = torch.cat([pos, (mid[:, None] == self.opp_mean[ou][None, :]).float().to(self.dev)], 1)
                target_x = pos_x / pos_x.sum(1, keepdim=True)
                i2t = torch.sum(-target_x * F.log_softmax(logits_x, 1), 1).mean()
            else:
                i2t = torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
        else:
            i2t = torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
        loss = 0.5 * (i2t + t2i)
        acc = (pos[torch.arange(b, device=self.dev), logits.argmax(1)] > 0).float().mean()
        return loss, {"loss": float(loss), "acc": float(acc), "scale": float(scale)}

    def after_step(self):
        with torch.no_grad():
            self.module.logit_scale.clamp_(0, math.log(100))

    def evaluate(self):
        """Held-out retrieval: each held-out scene against every grammar
        caption (right when the best caption means the same), and for the
        relations the share of scenes whose caption scores above its meaning
        with the objects swapped ("A above B" against "B above A")."""
        d = config.DATA["heldout"]
        caps, imgs = data.dataset("heldout", d["n"], d["seed"], d["size"])
        allc = grammar.all_captions()
        with torch.no_grad():
            toks, _ = self.tok.tokenize(allc, self.cfg["context_length"])
            te = torch.cat([self.module.encode_text(toks[s:s + 512].to(self.dev)) for s in range(0, len(allc), 512)])
            ie = features.image_embeddings(self.module, imgs, self.dev).to(self.dev)
            sim = ((ie / ie.norm(dim=1, keepdim=True)) @ (te / te.norm(dim=1, keepdim=True)).t()).cpu()
        means = [grammar.meaning(c) for c in allc]
        first = {}
        for i, m in enumerate(means):
            first.setdefault(m, i)
        top = sim.topk(5, dim=1).indices
        res, swapped = {}, []
        for k in ("single", "relation", "count"):
            rows = [i for i, c in enumerate(caps) if grammar.kind(c) == k]
            want = [grammar.meaning(caps[i]) for i in rows]
            r1 = sum(means[top[i, 0]] == w for i, w in zip(rows, want)) / len(rows)
            r5 = sum(any(means[j] == w for j in top[i]) for i, w in zip(rows, want)) / len(rows)
            res[k] = f"top1={r1:.3f} top5={r5:.3f}"
        for i, c in enumerate(caps):
            m = grammar.meaning(c)
            if m[0] == "relation":
                swapped.append(float(sim[i, first[m]] > sim[i, first[m[:2] + (m[3], m[2])]]))
        self.log("clip held-out retrieval of the meaning over all %d captions: %s; relation vs its objects swapped %.3f"
                 % (len(allc), "; ".join(f"{k} {v}" for k, v in res.items()), sum(swapped) / len(swapped)))


# --------------------------------------------------------------------------
class FeatureStage(Stage):
    """Stages that see the frozen CLIP's features of the scenes."""

    def setup_features(self):
        self.captions, self.images = scenes()
        _, self.tok, self.text, self.emb = features.frozen(RUNS, self.images, "scenes", self.dev, self.log)
        self.cap_id = self.text.ids(self.captions)

    def text_batch(self, tid):
        t = self.text
        return (t.feat[tid].to(self.dev), t.seq[tid].to(self.dev), t.mask[tid].to(self.dev))


class PriorStage(FeatureStage):
    """x0 prediction of the normalised image embedding, MSE, text dropout."""
    name = "prior"

    def setup(self):
        self.setup_features()
        self.diff = Diffusion.from_config(config.PRIOR["diffusion"])
        self.module = PriorDiffusionModel(config.PRIOR)
        self.module.clip_mean.copy_(self.emb.mean(0))
        self.module.clip_std.copy_(self.emb.std(0))
        self.drop = config.PRIOR["model"]["hparams"]["text_drop"]

    def extra_state(self):
        return {"config": config.PRIOR, "clip_mean": self.module.clip_mean.cpu(),
                "clip_std": self.module.clip_std.cpu()}

    def loss(self, step, gen):
        b = self.hp["batch"]
        idx = torch.randint(0, len(self.emb), (b,), generator=gen)
        m = self.module
        x0 = ((self.emb[idx].to(self.dev) - m.clip_mean) / m.clip_std)
        tid = self.cap_id[idx].clone()
        tid[torch.rand(b, generator=gen) < self.drop] = self.text.empty
        tf, ts, tm = self.text_batch(tid)
        t = torch.randint(0, self.diff.T, (b,), generator=gen).to(self.dev)
        noise = torch.randn(x0.shape, generator=gen).to(self.dev)
        xt = self.diff.q_sample(x0, t, noise)
        out = m.model(xt, t, tf, ts, tm)
        loss = self.diff.loss_mean(out, x0, xt, t, noise).mean()
        return loss, {"loss": float(loss)}


class DecoderStage(FeatureStage):
    """Karlo's decoder with its guidance dropouts: the text replaced by the
    empty prompt's features, the image embedding replaced by cf_param (both
    at once for the CFG branch).

    eps prediction trains with the hybrid loss (MSE + the VLB for the
    learned-range variance). x0 prediction trains with the MSE alone: the
    VLB's small-t terms, with the mean from an x0 estimate, are orders of
    magnitude larger than the MSE and swamped the network (loss 5, gradient
    norm 40 in the first x0 run). The variance channels of the output
    convolution are then held at zero, so the sampler's learned-range
    interpolation sits at frac 0.5: the geometric mean of beta_t and the
    posterior variance."""
    name = "decoder"

    def x0(self):
        return self.diff.mean_type == "x0"

    def load_extra(self, ck):
        if self.x0():
            self.zero_variance()

    def zero_variance(self):
        """Zero the variance channels of the output convolution in the
        weights, the EMA and the optimizer's momentum (a checkpoint trained
        for eps has them; an x0 run from scratch keeps them at zero)."""
        conv = self.module.model.out[2]
        names = {id(p): n for n, p in self.module.named_parameters()}
        with torch.no_grad():
            for p in (conv.weight, conv.bias):
                p[3:] = 0
                st = self.opt.state.get(p, {})
                if "exp_avg" in st:
                    st["exp_avg"][3:] = 0
                if self.ema is not None:
                    self.ema[names[id(p)]][3:] = 0

    def setup(self):
        self.setup_features()
        self.diff = Diffusion.from_config(config.DECODER["diffusion"])
        self.module = Text2ImProgressiveModel(config.DECODER)
        self.images_t = torch.from_numpy(self.images)
        # per-scene sampling weights giving each caption kind its share
        share = self.hp.get("kinds", {})
        kinds = [grammar.kind(c) for c in self.captions]
        n = {k: kinds.count(k) for k in set(kinds)}
        self.weight = torch.tensor([share.get(k, 1.0 / len(n)) / n[k] for k in kinds], dtype=torch.double)

    def extra_state(self):
        return {"config": config.DECODER}

    def loss(self, step, gen):
        b = self.hp["batch"]
        idx = torch.multinomial(self.weight, b, replacement=True, generator=gen)
        net = self.module.model
        x0 = to_pm1(self.images_t[idx]).to(self.dev)
        y = self.emb[idx].to(self.dev)
        tid = self.cap_id[idx].clone()
        r = torch.rand(b, generator=gen)
        p = config.DECODER_DROP
        drop_text = r < p["both"] + p["text_only"]
        drop_emb = (r < p["both"]) | ((r >= p["both"] + p["text_only"]) & (r < p["both"] + p["text_only"] + p["emb_only"]))
        tid[drop_text] = self.text.empty
        y = torch.where(drop_emb.to(self.dev)[:, None], net.cf_param[None].expand(b, -1), y)
        tf, ts, tm = self.text_batch(tid)
        p_high, t_high = self.hp.get("high_t", (0.0, 0))
        t = torch.randint(0, self.diff.T, (b,), generator=gen)
        high = torch.rand(b, generator=gen) < p_high
        t[high] = torch.randint(t_high, self.diff.T, (int(high.sum()),), generator=gen)
        t = t.to(self.dev)
        noise = torch.randn(x0.shape, generator=gen).to(self.dev)
        xt = self.diff.q_sample(x0, t, noise)
        out = net(xt, t, tf, ts, tm, y)
        if self.x0():
            mse = self.diff.loss_mean(out[:, :3], x0, xt, t, noise).mean()
            return mse, {"loss": float(mse), "mse": float(mse)}
        loss, mse, vb = self.diff.loss_hybrid(out, x0, xt, t, noise)
        return loss.mean(), {"loss": float(loss.mean()), "mse": float(mse.mean()), "vb": float(vb.mean())}

    @torch.no_grad()
    def evaluate(self, n=96, ts=(999, 980, 950)):
        """Does the layout of a relation follow the conditioning? For held-out
        relation scenes, the x0 prediction at a high t from the scene's
        conditioning minus that from the mirrored scene's, against the scene
        minus its mirror image (cosine; 0: the layout comes from the noise
        alone, 1: wholly from the conditioning). Embedding: the scene's and
        its mirror's CLIP image embeddings, text empty. Text: the caption and
        its opposite ("A above B", "A below B"), embedding dropped."""
        d = config.DATA["heldout"]
        caps, imgs = data.dataset("heldout", d["n"], d["seed"], d["size"])
        rows, other, axes = [], [], []
        for i, c in enumerate(caps):
            opp = grammar.opposite(c)
            if opp:
                rows.append(i)
                other.append(opp)
                axes.append(0 if grammar.meaning(c)[1] == "v" else 1)  # HWC: flip rows or columns
            if len(rows) == n:
                break
        u8 = torch.from_numpy(imgs[rows])
        mir = torch.stack([u.flip(ax) for u, ax in zip(u8, axes)])
        img, img_m = to_pm1(u8).to(self.dev), to_pm1(mir).to(self.dev)
        clip, _ = features.load_clip(os.path.join(RUNS, "clip"), self.dev)
        e, e_m = (features.image_embeddings(clip, x.numpy(), self.dev).to(self.dev) for x in (u8, mir))
        raw = None
        if self.ema is not None:  # judge the weights that get exported
            raw = {k: v.clone() for k, v in self.module.state_dict().items()}
            self.module.load_state_dict({**raw, **self.ema})
        net, b = self.module.model.eval(), len(rows)
        cf = net.cf_param[None].expand(b, -1)
        empty = self.text_batch(torch.full((b,), self.text.empty))
        txt, txt_m = (self.text_batch(self.text.ids([caps[i] for i in rows])), self.text_batch(self.text.ids(other)))
        gen = torch.Generator().manual_seed(0)
        cos = lambda a: F.cosine_similarity(a.flatten(1), (img - img_m).flatten(1)).mean().item()
        out = []
        for t in ts:
            tt = torch.full((b,), t, device=self.dev)
            xt = self.diff.q_sample(img, tt, torch.randn(img.shape, generator=gen).to(self.dev))
            pred = lambda text, y: net(xt, tt, *text, y)[:, :3]
            out.append(f"t={t}: embedding {cos(pred(empty, e) - pred(empty, e_m)):.3f}, "
                       f"text {cos(pred(txt, cf) - pred(txt_m, cf)):.3f}")
        if raw is not None:
            self.module.load_state_dict(raw)
        self.module.train()
        self.log(f"decoder layout from the conditioning ({b} held-out relation scenes): " + "; ".join(out))


class SRStage(Stage):
    """x4 upsampler: x0 MSE on random crops; low_res = the 32 px render of
    the same scene (lightly degraded), upsampled bicubic with antialias."""
    name = "sr"

    def setup(self):
        lo, hi = config.DATA["sr_lo"], config.DATA["sr_hi"]
        caps_lo, lo_img = data.dataset("sr_lo", lo["n"], lo["seed"], lo["size"])
        caps_hi, hi_img = data.dataset("sr_hi", hi["n"], hi["seed"], hi["size"])
        assert caps_lo == caps_hi, "sr_lo and sr_hi must be the same scenes"
        self.lo, self.hi = torch.from_numpy(lo_img), torch.from_numpy(hi_img)
        self.diff = Diffusion.from_config(dict(config.SR["diffusion"], timestep_respacing=""))
        self.module = ImprovedSupRes64to256ProgressiveModel(config.SR)
        self.net = self.module.model_first_steps
        # model_last_step shares the trained weights at export; no own gradients
        for p in self.module.model_last_step.parameters():
            p.requires_grad_(False)

    def extra_state(self):
        # the crop side it trains on: upsample runs it on tiles of that side
        # (export: unclip.default_tile)
        return {"config": config.SR, "crop": self.hp["crop"]}

    def degrade(self, lo, gen):
        b = lo.shape[0]
        blur = torch.rand(b, generator=gen) < 0.3
        if blur.any():
            sig = 0.3 + 0.5 * torch.rand(1, generator=gen).item()
            k = torch.exp(-torch.arange(-1, 2).float() ** 2 / (2 * sig * sig))
            k = (k[:, None] * k[None, :]) / k.sum() ** 2
            w = k.expand(3, 1, 3, 3).to(lo.device)
            lo[blur] = F.conv2d(F.pad(lo[blur], (1, 1, 1, 1), mode="replicate"), w, groups=3)
        noisy = (torch.rand(b, generator=gen) < 0.5).float().view(b, 1, 1, 1)
        sigma = 0.04 * torch.rand(b, 1, 1, 1, generator=gen)
        return lo + noisy * sigma * torch.randn(lo.shape, generator=gen)

    def loss(self, step, gen):
        b, c = self.hp["batch"], self.hp["crop"]
        idx = torch.randint(0, len(self.lo), (b,), generator=gen)
        lo = self.degrade(to_pm1(self.lo[idx]), gen)
        hi = to_pm1(self.hi[idx])
        size = hi.shape[-1]
        up = F.interpolate(lo, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        oy, ox = torch.randint(0, size - c + 1, (2,), generator=gen).tolist()
        x0 = hi[:, :, oy:oy + c, ox:ox + c].to(self.dev)
        lr = up[:, :, oy:oy + c, ox:ox + c].to(self.dev)
        t = torch.randint(0, self.diff.T, (b,), generator=gen).to(self.dev)
        noise = torch.randn(x0.shape, generator=gen).to(self.dev)
        xt = self.diff.q_sample(x0, t, noise)
        loss = self.diff.loss_mean(self.net(xt, t, lr), x0, xt, t, noise).mean()
        return loss, {"loss": float(loss)}


def slim(run_dir):
    """Shrink run_dir/ckpt.pt for keeping in git: drop the optimizer state
    and keep one set of weights, the EMA where there is one (a quarter of
    the size). Training resumes from it with the EMA as its weights and new
    AdamW moments, warmed up again."""
    path = os.path.join(run_dir, "ckpt.pt")
    ck = torch.load(path, map_location="cpu")
    before = os.path.getsize(path)
    ck.pop("opt", None)
    if "ema" in ck:
        ck["model"] = ck.pop("ema")
    torch.save(ck, path + ".tmp")
    os.replace(path + ".tmp", path)
    return before, os.path.getsize(path)


STAGES = {"clip": ClipStage, "prior": PriorStage, "decoder": DecoderStage, "sr": SRStage}
