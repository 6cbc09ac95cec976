// One rank of a data-parallel `train()` (started by test/helpers/ranks.ts' runRanks): the scenario
// argument is the TrainInput as JSON; on rank $NAN_RANK, the first gradient of step $NAN_STEP is
// made NaN after the averaging (a fault only that rank sees); $TRAIN_DTYPE: the model's dtype
// (float32 by default, float64 to compare runs beyond float32 rounding). Prints `RESULT {...}`: the outcome or
// the error, the log and the sum of the weights at each step.
import { noGrad } from "../../src/torch";
import { Progress } from "../../src/learning/progress";
import { train } from "../../src/learning/trainer";

const sink = { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream;

async function main(): Promise<void> {
  const input = JSON.parse(process.argv[2]) as Parameters<typeof train>[0];
  const nanRank = Number(process.env.NAN_RANK ?? -1);
  const nanStep = Number(process.env.NAN_STEP ?? -1);
  const logs: string[] = [];
  const weightSums: number[] = [];
  try {
    const outcome = await train(input, {
      log: (m) => logs.push(m),
      progress: new Progress(sink),
      dtype: process.env.TRAIN_DTYPE === "float64" ? "float64" : "float32",
      afterBackward: ({ step, parameters }) => {
        // The weights this step starts from, summed: equal on every rank while they stay in step.
        weightSums.push(noGrad(() => parameters.reduce((a, [, p]) => a + p.sum().item(), 0)));
        if (Number(process.env.RANK) === nanRank && step === nanStep)
          noGrad(() => {
            const grad = parameters[0][1].grad!;
            grad.fill_(NaN);
            grad.release();
          });
      },
    });
    console.log(`RESULT ${JSON.stringify({ ok: true, interrupted: outcome.interrupted, logs, weightSums })}`);
  } catch (error) {
    const e = error as Error & { exitCode?: number };
    console.log(
      `RESULT ${JSON.stringify({ ok: false, message: e.message, exitCode: e.exitCode ?? null, logs, weightSums })}`,
    );
  }
}

// Only as a rank (runRanks sets RANK): `node --test dist/test/` also loads every file under test/.
if (process.env.RANK !== undefined) void main();
