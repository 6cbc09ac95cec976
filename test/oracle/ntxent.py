"""Oracle for test/ntxent.oracle.test.ts: NT-Xent value and gradient w.r.t. the embeddings.

Written from the formula (SimCLR, Chen et al. 2020, eq. 1), independently of loco's ntXent: for
2N embeddings z (rows i and i+N are the two views of image i), with u = z / ||z|| and
s(i, j) = u_i . u_j / tau,

    L = 1/(2N) sum_i [ -s(i, pos(i)) + log sum_{j != i} exp s(i, j) ],   pos(i) = i +- N.

The main implementation is the loop-free form of SimCLR's own code: split the batch into the two
views a = u[:N], b = u[N:], build the four N x N blocks of similarities, knock out each anchor's
self-similarity with a large negative number, and take a cross-entropy whose target is column i of
the cross-view block, for view a and for view b, averaged. It does not build a 2N x 2N matrix, mask
it, or use index arithmetic mod 2N as loco does.

A second, naive implementation loops over the anchors one at a time in float64 (Python loops, an
explicit log-sum-exp over j != i); for the cases named in the metadata "loop_cases" the script
checks the two against each other itself (to 1e-12) and also writes the loop's value and gradient.

Inputs: "<case>.z" ([2N, d], float32 or float64). Metadata "cases": JSON list of
{"name", "temperature"}; "loop_cases": JSON list of case names.
Outputs: "<case>.loss" (scalar, z's dtype), "<case>.grad" (dL/dz, z's dtype); for float32 cases
also "<case>.exact_loss", "<case>.exact_grad" (the same inputs computed in float64); for loop cases
"<case>.loop_loss", "<case>.loop_grad" (float64).
"""
import json
import math

import torch

from st import run

LARGE = 1e9


def ntxent_blocks(z, tau):
    """SimCLR's loop-free formulation (two views as separate blocks)."""
    two_n = z.shape[0]
    n = two_n // 2
    norms = torch.sqrt((z * z).sum(dim=1, keepdim=True))
    u = z / torch.clamp(norms, min=1e-12)
    a, b = u[:n], u[n:]
    eye = torch.eye(n, dtype=z.dtype)
    logits_aa = a @ a.t() / tau - LARGE * eye
    logits_bb = b @ b.t() / tau - LARGE * eye
    logits_ab = a @ b.t() / tau
    logits_ba = b @ a.t() / tau
    labels = torch.arange(n)
    loss_a = torch.nn.functional.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = torch.nn.functional.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return (loss_a + loss_b) / 2


def ntxent_loop(z, tau):
    """One anchor at a time, straight from the formula (float64)."""
    two_n = z.shape[0]
    n = two_n // 2
    total = None
    for i in range(two_n):
        zi = z[i] / z[i].norm()
        sims = []
        for j in range(two_n):
            if j == i:
                continue
            zj = z[j] / z[j].norm()
            sims.append((j, (zi * zj).sum() / tau))
        top = max(float(s) for _, s in sims)
        lse = top + torch.log(sum(torch.exp(s - top) for _, s in sims))
        positive = [s for j, s in sims if j == (i + n if i < n else i - n)][0]
        term = lse - positive
        total = term if total is None else total + term
    return total / two_n


def value_and_grad(fn, z, tau):
    leaf = z.detach().clone().requires_grad_(True)
    loss = fn(leaf, tau)
    loss.backward()
    return loss.detach(), leaf.grad.detach()


def compute(inputs, metadata, args):
    cases = json.loads(metadata["cases"])
    loop_cases = set(json.loads(metadata.get("loop_cases", "[]")))
    out = {}
    for case in cases:
        name, tau = case["name"], float(case["temperature"])
        z = inputs[f"{name}.z"]
        loss, grad = value_and_grad(ntxent_blocks, z, tau)
        out[f"{name}.loss"] = loss
        out[f"{name}.grad"] = grad
        if z.dtype != torch.float64:
            # The same inputs in float64: the exact value, up to float64 rounding.
            exact_loss, exact_grad = value_and_grad(ntxent_blocks, z.double(), tau)
            out[f"{name}.exact_loss"] = exact_loss
            out[f"{name}.exact_grad"] = exact_grad
        if name in loop_cases:
            z64 = z.double()
            loop_loss, loop_grad = value_and_grad(ntxent_loop, z64, tau)
            block_loss, block_grad = value_and_grad(ntxent_blocks, z64, tau)
            if not math.isclose(float(loop_loss), float(block_loss), rel_tol=1e-12, abs_tol=0.0):
                raise SystemExit(f"{name}: loop {float(loop_loss)!r} != blocks {float(block_loss)!r}")
            worst = float((loop_grad - block_grad).abs().max())
            if worst > 1e-12 * max(1.0, float(block_grad.abs().max())):
                raise SystemExit(f"{name}: loop and block gradients differ by {worst}")
            out[f"{name}.loop_loss"] = loop_loss
            out[f"{name}.loop_grad"] = loop_grad
    return out


run(compute)
