// Lint rules. The one that matters most for the architecture: core/ runs in plain Node (CLI,
// server, Electron utility process), so it must never import from electron/ or renderer/.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "core/native/build/", "assets/", "**/*.d.ts"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["core/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["**/electron/**", "electron", "**/renderer/**", "react", "react-dom", "zustand"],
              message: "core/ must stay free of Electron and React.",
            },
          ],
        },
      ],
    },
  },
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    files: ["bin/**/*.js", "*.js", ".ci/**/*.js", "tools/**/*.mjs", "core/native/*.mjs"],
    languageOptions: { globals: { process: "readonly", console: "readonly" } },
  },
  {
    // Node's web globals, which the fuzz harnesses use (fetch against the server, timers, clones).
    files: ["tools/**/*.mjs"],
    languageOptions: {
      globals: {
        fetch: "readonly",
        AbortSignal: "readonly",
        URL: "readonly",
        performance: "readonly",
        structuredClone: "readonly",
      },
    },
  },
);
