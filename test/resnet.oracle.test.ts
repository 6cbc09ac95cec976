// Our ResNet-18 and ResNet-50 against torchvision's: the oracle builds the model (random init),
// exports its weights through safetensors, and both run the same train-mode forward and backward.
// Logits, every parameter gradient, BN running statistics and eval-mode logits agree to 1e-4 relative.
import { test } from "node:test";
import { Generator, noGrad, randn, scope } from "../src/torch";
import { resnet18, resnet50 } from "../src/models";
import { oracleAvailable, oracleScript, runOracle } from "./helpers/oracle";
import { assertClose } from "./helpers/assert";

const skip = oracleAvailable() ? false : "python3-torch is not installed for /usr/bin/python3";

for (const [arch, build, size] of [
  ["resnet18", resnet18, 64],
  ["resnet50", resnet50, 64],
] as const) {
  test(`${arch} matches torchvision: logits, all parameter gradients, BN statistics`, { skip }, () => {
    scope(() => {
      const x = randn([2, 3, size, size], { generator: new Generator(11) });
      const g = randn([2, 1000], { generator: new Generator(12) });
      const oracle = runOracle(oracleScript("resnet.py"), { x, g }, [arch], { timeoutMs: 300_000 });

      const model = build();
      const init = new Map<string, (typeof oracle)[string]>();
      for (const [k, v] of Object.entries(oracle)) if (k.startsWith("init.")) init.set(k.slice(5), v);
      model.loadStateDict(init);
      model.train();
      const y = model.forward(x);
      y.backward(g);
      assertClose(y, oracle.y, { rtol: 1e-4, name: `${arch} logits` });
      let compared = 0;
      for (const [name, p] of model.namedParameters()) {
        const grad = p.grad;
        if (grad === null) throw new Error(`${arch}: ${name} has no gradient`);
        // Relative to the tensor's scale: elements near zero carry only rounding.
        const expected = oracle[`grad.${name}`];
        const scale = noGrad(() => expected.abs().max().item());
        assertClose(grad, expected, { rtol: 1e-4, atol: scale * 1e-5, name: `${arch} grad ${name}` });
        compared++;
      }
      if (compared !== model.parameters().length) throw new Error("not every parameter was compared");
      for (const [key, value] of model.stateDict()) {
        const expected = oracle[`after.${key}`];
        if (expected !== undefined) assertClose(value, expected, { rtol: 1e-4, name: `${arch} ${key}` });
      }
      model.eval();
      const yEval = noGrad(() => model.forward(x));
      assertClose(yEval, oracle.y_eval, { rtol: 1e-4, atol: 1e-5, name: `${arch} eval logits` });
      model.dispose();
    });
  });
}
