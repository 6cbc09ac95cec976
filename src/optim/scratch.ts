// The buffer an optimizer writes each parameter's intermediate gradient into (grad + weightDecay·p,
// −grad, the Nesterov look-ahead), reused for every parameter and step instead of a new tensor per
// parameter per step: for ResNet-50 that is 165 allocations of up to 16 MiB a step that the
// allocator must find, and the kernel write into memory it may have to fault in again.
import type { Tensor } from "../torch/tensor";
import { empty } from "../torch/creation";
import type { Device } from "../torch/device";
import { keep } from "../torch/scope";

const kindOf = (t: Tensor): string => `${t.dtype}/${t.device}`;

export class StepScratch {
  /** By dtype and device: a flat buffer as large as the largest such parameter. */
  private readonly flats = new Map<string, Tensor>();
  /**
   * By parameter: a view of its kind's flat buffer with the parameter's shape and strides, and
   * that kind (kept here: parameters may be disposed before the optimizer).
   */
  private readonly views = new Map<Tensor, { view: Tensor; kind: string }>();

  /**
   * A tensor with `param`'s shape, strides, dtype and device, sharing memory with every other
   * parameter's (so it holds a value until the next parameter's use); null where `param` is not
   * dense (neither contiguous nor channels-last), where the caller allocates as before.
   * `all` lists the optimizer's parameters, to size the buffer once for all of them.
   */
  viewFor(param: Tensor, all: () => readonly Tensor[]): Tensor | null {
    const cached = this.views.get(param);
    if (cached !== undefined) return cached.view;
    if (!param.isContiguous() && !(param.ndim === 4 && param.isContiguous("channelsLast"))) return null;
    const kind = kindOf(param);
    let flat = this.flats.get(kind);
    if (flat === undefined || flat.numel() < param.numel()) {
      if (flat !== undefined) this.dropKind(kind, flat);
      const numel = Math.max(
        ...all()
          .filter((p) => kindOf(p) === kind)
          .map((p) => p.numel()),
        param.numel(),
      );
      flat = keep(empty([numel], { dtype: param.dtype, device: param.device as Device }));
      this.flats.set(kind, flat);
    }
    const view = keep(flat.asStrided(param.shape, param.strides));
    this.views.set(param, { view, kind });
    return view;
  }

  dispose(): void {
    for (const [kind, flat] of this.flats) this.dropKind(kind, flat);
  }

  private dropKind(kind: string, flat: Tensor): void {
    for (const [p, v] of this.views) {
      if (v.kind === kind) {
        v.view.dispose();
        this.views.delete(p);
      }
    }
    flat.dispose();
    this.flats.delete(kind);
  }
}
