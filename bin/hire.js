#!/usr/bin/env node
// The `hire` command (package.json "bin"). The CLI itself is TypeScript in core/cli, compiled to dist/.
import { main } from "../dist/core/cli/main.js";

process.exitCode = await main(process.argv.slice(2));
