// Child process of the kill -9 test (reliability.test.ts): writes checkpoints of a ~8 MB model in
// a loop, as fast as it can, until it is killed. Every tensor of checkpoint `step` holds the value
// `step`, so a reader can tell a checkpoint's contents belong to its run state.
//
// It does nothing unless LOCO_CHECKPOINT_WRITER_DIR is set: `node --test dist/test/` may load
// every file under test/.
import { CHECKPOINT_FORMAT, saveCheckpoint } from "../../src/learning/checkpoint";
import { defaultGenerator, keep, zeros } from "../../src/torch";

const dir = process.env.LOCO_CHECKPOINT_WRITER_DIR;
if (dir !== undefined && dir !== "") {
  const first = Number(process.env.LOCO_CHECKPOINT_WRITER_START ?? "0") + 1;
  const keepLast = Number(process.env.LOCO_CHECKPOINT_WRITER_KEEP ?? "2");
  const model = new Map([
    ["encoder.conv.weight", keep(zeros([512, 1024]))],
    ["decoders.0.head.weight", keep(zeros([512, 1024]))],
  ]);
  const optimizer = new Map([["state.0.momentum_buffer", keep(zeros([512, 1024]))]]);
  const generatorState = Buffer.from(defaultGenerator.getState()).toString("base64");
  process.stdout.write("ready\n");
  for (let step = first; ; step++) {
    for (const t of [...model.values(), ...optimizer.values()]) t.fill_(step);
    saveCheckpoint(
      dir,
      {
        format: CHECKPOINT_FORMAT,
        step,
        position: { epoch: 0, batch: step },
        phase: null,
        optimizer: null,
        generatorState,
        schedule: { step, lrs: [0.1] },
      },
      model,
      optimizer,
      keepLast,
    );
  }
}
