// Lint: typescript-eslint's recommended rules on the TypeScript sources.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["build/", "dist/", "node_modules/", "runs/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    // Layers above src/torch use Tensor methods and F, never the addon or raw handles (docs/architecture.md).
    files: ["src/**/*.ts"],
    ignores: ["src/torch/**"],
    rules: {
      "no-restricted-syntax": [
        "error",
        {
          selector: "MemberExpression[property.name='handle']",
          message: "No raw tensor handles above src/torch: add the op to Tensor or F (src/torch).",
        },
        {
          selector: "CallExpression[callee.name=/^(callTensor|callTensors|callInPlace|callOp)$/]",
          message: "No raw operator calls above src/torch: add the op to Tensor or F (src/torch).",
        },
      ],
      "no-restricted-imports": [
        "error",
        { patterns: [{ group: ["**/torch/native"], message: "Only src/torch loads the addon." }] },
      ],
    },
  },
  {
    files: ["**/*.mjs", "**/*.js"],
    languageOptions: {
      globals: { process: "readonly", console: "readonly", require: "readonly", __dirname: "readonly" },
    },
  },
);
