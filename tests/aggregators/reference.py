"""Float64 numpy references, written from the papers' and Flower's formulas.

A model is a list of arrays (Flower's ``NDArrays``); a cohort is a list of models. Nothing
here calls bbjax.
"""

from __future__ import annotations

import numpy as np


def _f64(models):
    return [[np.asarray(a, np.float64) for a in model] for model in models]


def _flat(model):
    return np.concatenate([np.ravel(a) for a in model])


def fedavg(models, weights):
    models = _f64(models)
    total = float(np.sum(weights))
    return [sum(w * m[j] for m, w in zip(models, weights)) / total for j in range(len(models[0]))]


def fedavgm_round(current, models, weights, lr, momentum, buffer):
    """One FedAvgM round; returns (new, buffer). ``buffer`` is None before round 1."""
    avg = fedavg(models, weights)
    if lr == 1.0 and momentum == 0.0:
        return avg, buffer
    pseudo = [np.float64(c) - a for c, a in zip(current, avg)]
    if momentum > 0.0:
        buffer = pseudo if buffer is None else [momentum * b + p for b, p in zip(buffer, pseudo)]
        pseudo = buffer
    return [np.float64(c) - lr * p for c, p in zip(current, pseudo)], buffer


def fedopt_round(kind, current, models, weights, server_round, m, v, *, eta, beta_1, beta_2,
                 tau):
    """One FedAdagrad / FedAdam / FedYogi round (Reddi et al., Flower's variant)."""
    avg = fedavg(models, weights)
    delta = [a - np.float64(c) for a, c in zip(avg, current)]
    m = [np.zeros_like(d) for d in delta] if m is None else m
    v = [np.zeros_like(d) for d in delta] if v is None else v
    m = [beta_1 * mi + (1 - beta_1) * d for mi, d in zip(m, delta)]
    if kind == "adagrad":
        v = [vi + d * d for vi, d in zip(v, delta)]
    elif kind == "adam":
        v = [beta_2 * vi + (1 - beta_2) * d * d for vi, d in zip(v, delta)]
    else:
        v = [vi - (1 - beta_2) * d * d * np.sign(vi - d * d) for vi, d in zip(v, delta)]
    lr = eta
    if kind == "adam":
        lr = eta * np.sqrt(1 - beta_2 ** (server_round + 1)) / (1 - beta_1 ** (server_round + 1))
    new = [np.float64(c) + lr * mi / (np.sqrt(vi) + tau) for c, mi, vi in zip(current, m, v)]
    return new, m, v


def qfedavg(current, models, losses, q, lr):
    current = [np.asarray(c, np.float64) for c in current]
    deltas, hs = [], []
    for model, loss in zip(_f64(models), losses):
        grads = [(c - x) / lr for c, x in zip(current, model)]
        f = loss + 1e-10
        deltas.append([f ** q * g for g in grads])
        hs.append(q * f ** (q - 1) * np.sum(_flat(grads) ** 2) + f ** q / lr)
    return [c - sum(d[j] for d in deltas) / sum(hs) for j, c in enumerate(current)]


def median(models):
    models = _f64(models)
    return [np.median(np.stack([m[j] for m in models]), axis=0) for j in range(len(models[0]))]


def trimmed_mean(models, proportion):
    models = _f64(models)
    n = len(models)
    cut = int(proportion * n)
    out = []
    for j in range(len(models[0])):
        s = np.sort(np.stack([m[j] for m in models]), axis=0)
        out.append(s[cut:n - cut].mean(axis=0))
    return out


def krum_scores(models, f):
    flat = [_flat(m) for m in _f64(models)]
    n = len(flat)
    k = max(1, n - f - 2)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((flat[i] - flat[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[:k]))
    return np.asarray(scores)


def krum(models, weights, f, to_keep):
    scores = krum_scores(models, f)
    if to_keep == 0:
        return _f64(models)[int(np.argmin(scores))]
    keep = np.argsort(scores, kind="stable")[:to_keep]
    return fedavg([models[i] for i in keep], [weights[i] for i in keep])


def bulyan(models, f):
    models = _f64(models)
    n = len(models)
    theta, beta = n - 2 * f, n - 4 * f
    left, picked = list(range(n)), []
    for _ in range(theta):
        scores = krum_scores([models[i] for i in left], f)
        picked.append(left.pop(int(np.argmin(scores))))
    out = []
    for j in range(len(models[0])):
        vals = np.stack([models[i][j] for i in picked])
        med = np.median(vals, axis=0)
        closest = np.argsort(np.abs(vals - med), axis=0, kind="stable")[:beta]
        out.append(np.take_along_axis(vals, closest, axis=0).mean(axis=0))
    return out


def scaffold_round(current, control, models, deltas, weights, lr, population):
    avg_step = fedavg([[x - np.float64(c) for x, c in zip(m, current)] for m in models], weights)
    new = [np.float64(c) + lr * s for c, s in zip(current, avg_step)]
    new_control = [np.float64(c) + sum(np.float64(d[j]) for d in deltas) / population
                   for j, c in enumerate(control)]
    return new, new_control
