// Builds the CUDA kernels for binding.gyp, which runs this at configure time (`<!(node cuda-build.mjs ...)`):
//   node cuda-build.mjs obj     compile src/cuda/cuda_backend.cu with nvcc, print the object's path
//                               (nothing when nvcc is not found, HIRE_CUDA=0, or the compile fails
//                               outside CI: the addon then links src/cuda/cuda_stub.cc and reports
//                               no CUDA; in CI or with HIRE_CUDA=1 a failed compile fails the build)
//   node cuda-build.mjs libdir  print the CUDA toolkit's library folder (for the static runtime)
// stdout is what gyp reads, so every message goes to stderr. The object is rebuilt only when the
// sources or the flags change. Targets: sm_80 (Ampere, also runs on sm_86/sm_89), sm_90 (Hopper), and
// compute_90 PTX for newer GPUs; HIRE_CUDA_ARCH="80;90" overrides the list.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync, statSync, realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

function findNvcc() {
  if (process.env.HIRE_CUDA === "0") return null;
  const candidates = [];
  if (process.env.CUDA_HOME) candidates.push(join(process.env.CUDA_HOME, "bin", "nvcc"));
  if (process.env.CUDA_PATH) candidates.push(join(process.env.CUDA_PATH, "bin", "nvcc"));
  candidates.push("/usr/local/cuda/bin/nvcc");
  for (const dir of (process.env.PATH || "").split(":")) if (dir) candidates.push(join(dir, "nvcc"));
  return candidates.find((p) => existsSync(p)) || null;
}

// The toolkit root: where lib64/libcudart_static.a sits next to bin/nvcc (nvcc may be a wrapper script).
function toolkitRoot(nvcc) {
  const roots = [dirname(dirname(realpathSync(nvcc))), "/usr/local/cuda"];
  try {
    const out = execFileSync(nvcc, ["--dryrun", "--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const m = /TOP=(\S+)/.exec(out);
    if (m) roots.unshift(resolve(m[1]));
  } catch {
    // --dryrun output is only a hint
  }
  return roots.find((r) => existsSync(join(r, "lib64", "libcudart_static.a"))) || null;
}

function main() {
  const what = process.argv[2];
  const nvcc = findNvcc();
  const root = nvcc ? toolkitRoot(nvcc) : null;
  if (!nvcc || !root) {
    if (what === "obj")
      console.error(
        nvcc
          ? "cuda-build: nvcc found but no libcudart_static.a; building without CUDA"
          : "cuda-build: no nvcc; building without CUDA",
      );
    return "";
  }
  if (what === "libdir") return join(root, "lib64");
  if (what !== "obj") throw new Error(`usage: node cuda-build.mjs obj|libdir`);

  const src = join(here, "src", "cuda", "cuda_backend.cu");
  const hdr = join(here, "src", "cuda", "cuda_backend.h");
  const outDir = join(here, "build-cuda");
  const obj = join(outDir, "cuda_backend.o");
  const archs = (process.env.HIRE_CUDA_ARCH || "80;90").split(/[;,\s]+/).filter(Boolean);
  const gencode = archs.flatMap((a) => ["-gencode", `arch=compute_${a},code=sm_${a}`]);
  const last = archs[archs.length - 1];
  gencode.push("-gencode", `arch=compute_${last},code=compute_${last}`);
  const args = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", ...gencode, "-c", src, "-o", obj];
  const stamp = join(outDir, "stamp.json");
  const key = JSON.stringify({ nvcc, args, src: statSync(src).mtimeMs, hdr: statSync(hdr).mtimeMs });
  if (existsSync(obj) && existsSync(stamp) && readFileSync(stamp, "utf8") === key) return obj;
  mkdirSync(outDir, { recursive: true });
  console.error(`cuda-build: ${nvcc} ${args.join(" ")}`);
  execFileSync(nvcc, args, { stdio: ["ignore", "inherit", "inherit"] });
  writeFileSync(stamp, key);
  return obj;
}

try {
  process.stdout.write(main());
} catch (e) {
  // In CI (or with HIRE_CUDA=1) a CUDA compile error fails the build: it must not pass as "no CUDA".
  // On a user's machine (an older or broken toolkit) the addon is still built, without CUDA, and
  // `hire gpus` says so.
  console.error(`cuda-build: ${e instanceof Error ? e.message : e}`);
  if (process.env.CI || process.env.HIRE_CUDA === "1") process.exit(1);
  console.error("cuda-build: WARNING: the CUDA backend did not compile; building without it");
}
