// The sequential schedule's phases: the epochs are split evenly between the losses, each phase
// training its loss's stages (and decoder) with the stages below frozen.
import type { TrainContext } from "./train-context";

/** Which sequential phase an epoch belongs to (epochs split evenly between the losses). */
export function phaseOfEpoch(epoch: number, epochs: number, phases: number): number {
  return Math.min(phases - 1, Math.floor((epoch * phases) / epochs));
}

/** "stage 3", "stages 1-2": 1-based, contiguous runs joined. */
function stageList(flags: boolean[]): string {
  const picked = flags.flatMap((on, k) => (on ? [k + 1] : []));
  if (picked.length === 0) return "no stage";
  const contiguous = picked.every((s, i) => i === 0 || s === picked[i - 1] + 1);
  if (picked.length === 1) return `stage ${picked[0]}`;
  return contiguous ? `stages ${picked[0]}-${picked.at(-1)}` : `stages ${picked.join(",")}`;
}

/** Sequential schedule: enters the epoch's phase, saying what it trains. */
export function enterPhase(ctx: TrainContext, epoch: number): void {
  const { learner } = ctx.model;
  const phases = learner.losses.length;
  const phase = phaseOfEpoch(epoch, ctx.options.epochs, phases);
  if (ctx.announcedPhase === phase) return;
  if (learner.phase !== phase) learner.setPhase(phase);
  ctx.announcedPhase = phase;
  const trainable = learner.trainableStages();
  const loss = learner.losses[phase];
  const frozen = trainable.slice(0, loss.stage).map((t) => !t);
  ctx.hooks.log(
    `sequential schedule: phase ${phase + 1}/${phases} trains ${stageList(trainable)} and the decoder of stage ${loss.stage + 1}` +
      (frozen.some((f) => f) ? `; ${stageList(frozen)} frozen` : ""),
  );
}
