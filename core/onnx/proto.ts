// A small ONNX graph builder over the `onnx-proto` package (protobufjs-generated message classes):
// nodes with unique output names, typed constants, and initializers whose bytes go to one external
// data file next to the .onnx (ONNX "external data": location / offset / length per tensor, offsets
// aligned to 4 KiB so ONNX Runtime can map them). Subgraphs (the `If` branches of the HiRE export)
// share the root's initializers and name counter, and reference outer-scope values by name.
import onnxProto from "onnx-proto";
import { closeSync, openSync, writeSync } from "node:fs";
import { basename } from "node:path";
import { writeError } from "../loader/file-io.js";

export const onnx = onnxProto.onnx;
export type ModelProto = ReturnType<typeof onnx.ModelProto.create>;

/** ONNX TensorProto.DataType values used here. */
export const DT = { FLOAT: 1, UINT8: 2, INT8: 3, INT64: 7, BOOL: 9, FLOAT16: 10 } as const;
export type DataType = (typeof DT)[keyof typeof DT];

const ATTR = onnx.AttributeProto.AttributeType;

/** Attribute values: numbers are INT unless listed in `floats`, arrays are INTS, a graph is GRAPH. */
export type AttrValue = number | number[] | string | { float: number } | { graph: GraphBuilder };

/** Tensors smaller than this are stored inline in the .onnx; larger ones in the data file. */
const INLINE_BYTES = 1024;
const ALIGN = 4096;

/** Appends initializer bytes to the external data file. */
export class ExternalData {
  private fd: number;
  private offset = 0;
  readonly location: string;

  constructor(readonly file: string) {
    try {
      this.fd = openSync(file, "w");
    } catch (e) {
      throw writeError(e, file);
    }
    this.location = basename(file);
  }

  /** Write `bytes` at the next aligned offset; returns the offset. */
  append(bytes: Uint8Array): number {
    const start = Math.ceil(this.offset / ALIGN) * ALIGN;
    try {
      if (start > this.offset)
        writeSync(this.fd, new Uint8Array(start - this.offset), 0, start - this.offset, this.offset);
      for (let done = 0; done < bytes.length;) {
        done += writeSync(this.fd, bytes, done, Math.min(bytes.length - done, 1 << 30), start + done);
      }
    } catch (e) {
      throw writeError(e, this.file);
    }
    this.offset = start + bytes.length;
    return start;
  }

  get bytes(): number {
    return this.offset;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

interface Shared {
  counter: number;
  initializers: ReturnType<typeof onnx.TensorProto.create>[];
  constants: Map<string, string>;
  data: ExternalData;
}

export class GraphBuilder {
  readonly nodes: ReturnType<typeof onnx.NodeProto.create>[] = [];
  readonly inputs: ReturnType<typeof onnx.ValueInfoProto.create>[] = [];
  readonly outputs: ReturnType<typeof onnx.ValueInfoProto.create>[] = [];

  private constructor(private readonly shared: Shared) {}

  static root(data: ExternalData): GraphBuilder {
    return new GraphBuilder({ counter: 0, initializers: [], constants: new Map(), data });
  }

  /** A subgraph (If branch): its own nodes, the root's initializers and names. */
  subgraph(): GraphBuilder {
    return new GraphBuilder(this.shared);
  }

  /** A fresh value name with a readable prefix. */
  name(prefix: string): string {
    return `${prefix}_${this.shared.counter++}`;
  }

  /** Add a node; returns its output name(s). `outputs` may give names or a count. */
  op(type: string, inputs: string[], attrs: Record<string, AttrValue> = {}, o: NodeOptions = {}): string {
    return this.opN(type, inputs, attrs, { ...o, outputs: o.outputs ?? 1 })[0];
  }

  opN(type: string, inputs: string[], attrs: Record<string, AttrValue> = {}, o: NodeOptions = {}): string[] {
    const outs =
      typeof o.outputs === "number" || o.outputs === undefined
        ? Array.from({ length: o.outputs ?? 1 }, () => this.name(o.prefix ?? type.toLowerCase()))
        : o.outputs;
    this.nodes.push(
      onnx.NodeProto.create({
        opType: type,
        domain: o.domain ?? "",
        name: this.name(`n_${type}`),
        input: inputs,
        output: outs,
        attribute: Object.entries(attrs).map(([name, v]) => attribute(name, v)),
      }),
    );
    return outs;
  }

  /** A named graph input or output. Dims: numbers (fixed) or strings (symbolic). */
  input(name: string, type: DataType, dims: (number | string)[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }
  output(name: string, type: DataType, dims?: (number | string)[]): string {
    this.outputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** An initializer. Large tensors go to the external data file; small ones inline. */
  tensor(name: string, type: DataType, dims: number[], bytes: Uint8Array): string {
    const t = onnx.TensorProto.create({ name, dataType: type, dims });
    if (bytes.length < INLINE_BYTES) t.rawData = bytes.slice();
    else {
      const offset = this.shared.data.append(bytes);
      t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      t.externalData = [
        { key: "location", value: this.shared.data.location },
        { key: "offset", value: String(offset) },
        { key: "length", value: String(bytes.length) },
      ];
    }
    this.shared.initializers.push(t);
    return name;
  }

  f32(name: string, dims: number[], data: Float32Array): string {
    if (data.length !== dims.reduce((a, d) => a * d, 1)) throw new Error(`${name}: ${data.length} values for ${dims}`);
    return this.tensor(name, DT.FLOAT, dims, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  /** A shared int64 constant (a vector, or a scalar when `scalar`). */
  i64(values: number[], scalar = false): string {
    const key = `i64:${scalar ? "s" : "v"}:${values.join(",")}`;
    let name = this.shared.constants.get(key);
    if (!name) {
      name = this.name(scalar ? `c${values[0]}` : "cvec");
      const data = BigInt64Array.from(values.map((v) => BigInt(v)));
      this.tensor(name, DT.INT64, scalar ? [] : [values.length], new Uint8Array(data.buffer));
      this.shared.constants.set(key, name);
    }
    return name;
  }

  /** A shared float32 scalar constant. */
  scalar(value: number): string {
    const key = `f32:${Object.is(value, -0) ? "-0" : value}`;
    let name = this.shared.constants.get(key);
    if (!name) {
      name = this.name("cf");
      this.tensor(name, DT.FLOAT, [], new Uint8Array(Float32Array.of(value).buffer));
      this.shared.constants.set(key, name);
    }
    return name;
  }

  /** This builder's nodes as a GraphProto (the root also carries every initializer). */
  graph(name: string, root: boolean): ReturnType<typeof onnx.GraphProto.create> {
    return onnx.GraphProto.create({
      name,
      node: this.nodes,
      input: this.inputs,
      output: this.outputs,
      initializer: root ? this.shared.initializers : [],
    });
  }
}

export interface NodeOptions {
  domain?: string;
  outputs?: number | string[];
  prefix?: string;
}

function attribute(name: string, v: AttrValue): ReturnType<typeof onnx.AttributeProto.create> {
  if (typeof v === "number") return onnx.AttributeProto.create({ name, type: ATTR.INT, i: v });
  if (Array.isArray(v)) return onnx.AttributeProto.create({ name, type: ATTR.INTS, ints: v });
  if (typeof v === "string") return onnx.AttributeProto.create({ name, type: ATTR.STRING, s: Buffer.from(v) });
  if ("float" in v) return onnx.AttributeProto.create({ name, type: ATTR.FLOAT, f: v.float });
  return onnx.AttributeProto.create({ name, type: ATTR.GRAPH, g: v.graph.graph(name, false) });
}

function valueInfo(name: string, type: DataType, dims?: (number | string)[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType: type,
        shape: dims && { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

/** Serialize a model: IR version 8 (what onnx-proto's schema describes), the given opsets. */
export function encodeModel(
  graph: ReturnType<typeof onnx.GraphProto.create>,
  opsets: Record<string, number>,
): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: "hire-studio",
    producerVersion: "1",
    graph,
    opsetImport: Object.entries(opsets).map(([domain, version]) => ({ domain, version })),
  });
  return onnx.ModelProto.encode(model).finish();
}
