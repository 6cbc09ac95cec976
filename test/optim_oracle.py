"""PyTorch oracle for test/optim.test.ts.

Reads JSON from stdin:
  {"cases": [{"optimizer": "SGD" | "Adam" | "AdamW",
              "defaults": {torch.optim keyword arguments},
              "groups": [{"params": [parameter indices], **per-group keyword arguments}],
              "params": [{"shape": [...], "data": [flat float32 values]}],
              "grads": [[flat values or null, one per parameter], one per step]}]}
Writes JSON to stdout: {"torch": version, "results": [{"params": [[flat values per parameter], one per step]}]}
(the parameters after each step). Runs on /usr/bin/python3 with python3-torch; float32 throughout,
single-tensor code path (foreach=False).
"""
import json
import sys

import torch


def run_case(case):
    params = [
        torch.tensor(p["data"], dtype=torch.float32).reshape(p["shape"]).requires_grad_(True)
        for p in case["params"]
    ]
    groups = []
    for g in case["groups"]:
        group = {k: (tuple(v) if isinstance(v, list) else v) for k, v in g.items() if k != "params"}
        group["params"] = [params[i] for i in g["params"]]
        groups.append(group)
    defaults = {k: (tuple(v) if isinstance(v, list) else v) for k, v in case["defaults"].items()}
    cls = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[case["optimizer"]]
    opt = cls(groups, foreach=False, **defaults)
    out = []
    for step_grads in case["grads"]:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float32).reshape(p.shape)
        opt.step()
        out.append([p.detach().reshape(-1).tolist() for p in params])
    return {"params": out}


def main():
    request = json.load(sys.stdin)
    torch.set_num_threads(1)
    results = [run_case(c) for c in request["cases"]]
    json.dump({"torch": torch.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
