// Vite build of the renderer: the same bundle runs in Electron's window and, served by `hire serve`,
// in a browser. Relative base so it loads from file:// and from any HTTP path.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL(".", import.meta.url));

export default defineConfig({
  root,
  base: "./",
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL("../dist/ui", import.meta.url)),
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    // `vite --config renderer/vite.config.ts` during development: forward the protocol to `hire serve`.
    proxy: { "/ws": { target: "ws://127.0.0.1:8765", ws: true } },
  },
});
