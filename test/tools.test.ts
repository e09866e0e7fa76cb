// Tool calling through the OpenAI endpoint: the reply's calls in the forms chat templates teach
// (parsed on constructed replies, since the random models this project makes do not call tools of
// their own accord), calls forced by tool_choice (which they do write: the grammar holds them to a
// call), the streamed text held back from a call's marker on, the tools and the calls' round trip
// rendered by a model's own chat template, the endpoint's checks of what a request says about tools,
// and response_format's structured replies.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EngineHost } from "../core/host/engine-host.js";
import { serve, type RunningServer } from "../core/host/server.js";
import { toolReply } from "../core/host/openai.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { loadModel } from "../core/loader/model-folder.js";
import { ToolCallStream, callAfterMarker, forcedCallGrammar, parseToolCalls } from "../core/host/tool-calls.js";
import { feed, finished, initial } from "../core/structured/automaton.js";
import { defaultModelDir } from "../core/loader/default-model.js";
import { TokenVocabulary, TriggeredGrammar } from "../core/structured/constraint.js";
import { HERMES_TOOLS_TEMPLATE, sentencePieceTokenizer, tempDir } from "./helpers.js";

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

test("parseToolCalls: Hermes/Qwen <tool_call> blocks and Mistral's [TOOL_CALLS] list; malformed calls stay text", () => {
  const hermes = parseToolCalls(
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n' +
      '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"CET\\"}"}</tool_call>',
  );
  assert.equal(hermes.content, "Let me check.");
  assert.deepEqual(hermes.calls, [
    { name: "get_weather", arguments: '{"city":"Oslo"}' },
    { name: "get_time", arguments: '{"zone": "CET"}' },
  ]);
  const tagged = parseToolCalls(
    'Checking.<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}',
    new Set(["get_weather"]),
  );
  assert.deepEqual(tagged, { content: "Checking.", calls: [{ name: "get_weather", arguments: '{"city":"Rome"}' }] });
  assert.equal(parseToolCalls('<|python_tag|>brave_search.call(query="x")', new Set(["get_weather"])).calls.length, 0);
  const mistral = parseToolCalls('[TOOL_CALLS] [{"name": "get_weather", "parameters": {"city": "Rome"}}]');
  assert.deepEqual(mistral, { content: "", calls: [{ name: "get_weather", arguments: '{"city":"Rome"}' }] });
  for (const text of [
    "<tool_call>{not json}</tool_call>",
    '<tool_call>{"arguments": {}}</tool_call>', // no name
    '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', // arguments not an object
    "[TOOL_CALLS] oops",
    "plain text",
  ]) {
    const r = parseToolCalls(text);
    assert.deepEqual(r.calls, [], text);
    assert.equal(r.content, text.trim(), text);
  }
  // A block cut off by max_tokens is a call only if its JSON is whole.
  assert.equal(parseToolCalls('<tool_call>{"name": "f", "arguments": {"a": 1}}').calls.length, 1);
  assert.equal(parseToolCalls('<tool_call>{"name": "f", "argu').calls.length, 0);
});

test("ToolCallStream: text before a call streams, the call and a possible marker's start are held back", () => {
  const s = new ToolCallStream();
  assert.equal(s.push("Sure, "), "Sure, ");
  assert.equal(s.push("checking <to"), "checking ", "'<to' may start <tool_call>");
  assert.equal(s.push("ol_call>"), "", "a call has started");
  assert.equal(s.push('{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'), "");
  assert.deepEqual(s.finish(), { calls: [{ name: "get_weather", arguments: '{"city":"Oslo"}' }], heldText: "" });
  // A marker's start that turns out to be text goes out with the next piece; a malformed call at the end.
  const t = new ToolCallStream();
  assert.equal(t.push("a <"), "a ");
  assert.equal(t.push("b"), "<b");
  assert.equal(t.push(" <tool_call>nope"), " ");
  assert.deepEqual(t.finish(), { calls: [], heldText: "<tool_call>nope" });
});

let root: string;
let host: EngineHost;
let server: RunningServer;
let toolModel: string;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "hire-tools-"));
  toolModel = join(root, "tool-model");
  // Room for forced calls: this random model spends many one-byte tokens on the whitespace a grammar allows.
  await makeModel({ arch: "qwen3", dtype: "f32", seed: 3, shape: { maxPositions: 2048 }, out: toolModel });
  writeFileSync(join(toolModel, "chat_template.jinja"), HERMES_TOOLS_TEMPLATE);
  host = new EngineHost({ dataDir: join(root, "data"), contextLength: 2048 });
  await host.handle({ id: 0, type: "model.load", path: toolModel }, () => {});
  server = await serve({ host, port: 0 });
});

after(async () => {
  await server.close();
  host.close();
  rmSync(root, { recursive: true, force: true });
});

interface Answer {
  choices: { message: { content: string | null; tool_calls?: unknown[] }; finish_reason: string }[];
  usage: { prompt_tokens: number };
  error?: { message: string };
}

async function post(body: Record<string, unknown>): Promise<{ status: number; json: Answer }> {
  const res = await fetch(server.url + "/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ max_tokens: 4, temperature: 0, ...body }),
  });
  return { status: res.status, json: (await res.json()) as Answer };
}

test("the chat template renders the tools, an assistant's calls (arguments as an object) and the tool's result", () => {
  const model = loadModel(toolModel);
  try {
    const prompt = model.tokenizer.applyChatTemplate(
      [
        { role: "user", content: "Weather in Oslo?" },
        {
          role: "assistant",
          content: "",
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Oslo"}' } },
          ],
        },
        { role: "tool", content: '{"temp": -3}', tool_call_id: "call_1" },
      ],
      true,
      { tools: [WEATHER] },
    );
    // tojson as transformers' (Python's json.dumps separators), blocks trimmed as its jinja does.
    assert.match(prompt, /<tools>\{"type": "function", "function": \{"name": "get_weather", "description"/);
    assert.match(prompt, /<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Oslo"\}\}\n<\/tool_call>/);
    assert.match(prompt, /<tool_response>\n\{"temp": -3\}\n<\/tool_response>/);
    assert.ok(prompt.endsWith("<|im_start|>assistant\n"));
    assert.ok(model.tokenizer.readsTools);
  } finally {
    model.close();
  }
});

test("the endpoint gives the model its tools and a conversation's calls and results", async () => {
  const messages = [{ role: "user", content: "Weather in Oslo?" }];
  const plain = await post({ messages });
  const withTools = await post({ messages, tools: [WEATHER] });
  assert.equal(withTools.status, 200, withTools.json.error?.message);
  assert.ok(withTools.json.usage.prompt_tokens > plain.json.usage.prompt_tokens + 40, "the tools are in the prompt");
  const none = await post({ messages, tools: [WEATHER], tool_choice: "none" });
  assert.equal(none.json.usage.prompt_tokens, plain.json.usage.prompt_tokens, 'tool_choice "none": no tools');
  // The round trip: the assistant's call (content null, as OpenAI sends it) and the tool's result.
  const roundTrip = await post({
    tools: [WEATHER],
    messages: [
      ...messages,
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: '{"temp": -3}' },
    ],
  });
  assert.equal(roundTrip.status, 200, roundTrip.json.error?.message);
  assert.ok(roundTrip.json.usage.prompt_tokens > withTools.json.usage.prompt_tokens + 20);
  // This random model writes no call: an ordinary reply.
  assert.equal(typeof roundTrip.json.choices[0].message.content, "string");
  assert.ok(["stop", "length"].includes(roundTrip.json.choices[0].finish_reason));
});

test("bad tool requests are 400s that name the field; a template without tools refuses them", async () => {
  const messages = [{ role: "user", content: "hi" }];
  for (const [body, pattern] of [
    [{ tools: {} }, /"tools" must be an array/],
    [{ tools: [{ type: "function", function: { description: "no name" } }] }, /"tools\[0\]" must be/],
    [{ messages: [{ role: "assistant", content: null, tool_calls: [{ function: {} }] }] }, /tool_calls\[0\]/],
    [{ messages: [{ role: "robot", content: "x" }] }, /role must be "system", "user", "assistant" or "tool"/],
  ] as const) {
    const r = await post({ messages, ...body });
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.json.error!.message, pattern);
  }
  // The built-in model's ChatML template has no tools: a request with tools is refused, not ignored.
  const other = new EngineHost({ dataDir: join(root, "data2"), contextLength: 256 });
  await other.handle({ id: 0, type: "model.load", path: defaultModelDir() }, () => {});
  const s2 = await serve({ host: other, port: 0 });
  try {
    const res = await fetch(s2.url + "/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages, tools: [WEATHER], max_tokens: 2 }),
    });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as Answer).error!.message, /chat template does not take tools/);
  } finally {
    await s2.close();
    other.close();
  }
});

test("a reply with calls is OpenAI's tool_calls message; one without is the text as it is", () => {
  const r = toolReply(
    "chatcmpl-hire-7",
    'Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
    "stop",
  );
  assert.deepEqual(r, {
    message: {
      role: "assistant",
      content: "Checking.",
      tool_calls: [
        {
          id: "call_chatcmplhire7_0",
          type: "function",
          function: { name: "get_weather", arguments: '{"city":"Oslo"}' },
        },
      ],
    },
    finish_reason: "tool_calls",
  });
  const only = toolReply("x", '<tool_call>{"name": "f", "arguments": {}}</tool_call>', "stop");
  assert.equal(only.message.content, null, "no text outside the call");
  assert.deepEqual(toolReply("x", "just text", "length"), {
    message: { role: "assistant", content: "just text" },
    finish_reason: "length",
  });
});

test("streaming with tools: the chunks and a closing finish_reason (this model's reply has no call)", async () => {
  const res = await fetch(server.url + "/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      messages: [{ role: "user", content: "hi" }],
      tools: [WEATHER],
      stream: true,
      max_tokens: 6,
    }),
  });
  assert.equal(res.status, 200);
  const events = (await res.text())
    .split("\n\n")
    .filter((e) => e.startsWith("data: ") && e !== "data: [DONE]")
    .map((e) => JSON.parse(e.slice(6)) as { choices: { delta: { content?: string }; finish_reason: string | null }[] });
  const last = events[events.length - 1].choices[0];
  assert.ok(["stop", "length"].includes(last.finish_reason!));
  assert.ok(events.length >= 3, "opening, token and closing chunks");
});

test("calls must name one of the request's functions; Llama 3's whole-reply JSON is a call only then", () => {
  const names = new Set(["get_weather"]);
  const llama = '{"name": "get_weather", "parameters": {"city": "Oslo"}}';
  assert.deepEqual(parseToolCalls(llama, names), {
    content: "",
    calls: [{ name: "get_weather", arguments: '{"city":"Oslo"}' }],
  });
  assert.deepEqual(parseToolCalls(llama).calls, [], "without the request's functions, JSON is text");
  assert.deepEqual(parseToolCalls('{"name": "launch", "parameters": {}}', names).calls, [], "not a request's function");
  const other = '<tool_call>{"name": "launch", "arguments": {}}</tool_call>';
  assert.deepEqual(parseToolCalls(other, names), { content: other, calls: [] });
  // Streamed: a reply that opens with "{" is held back until it is known to be a call or text.
  const s = new ToolCallStream(names);
  assert.equal(s.push(' {"name": "get_weather", '), "");
  assert.equal(s.push('"parameters": {"city": "Oslo"}}'), "");
  assert.deepEqual(s.finish().calls, [{ name: "get_weather", arguments: '{"city":"Oslo"}' }]);
  const t = new ToolCallStream(names);
  assert.equal(t.push('{"a": 1}'), "");
  assert.deepEqual(t.finish(), { calls: [], heldText: '{"a": 1}' });
  const u = new ToolCallStream(names);
  assert.equal(u.push("Hello {"), "Hello {", "text first: streamed as it comes");
});

// Bounded strings: this random model would otherwise write one for hundreds of tokens.
const SHORT_WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 } }, required: ["city"] },
  },
};

const CLOCK = {
  type: "function",
  function: {
    name: "get_time",
    parameters: {
      type: "object",
      properties: { zone: { enum: ["UTC", "CET"] }, precise: { type: "boolean" } },
      required: ["zone"],
    },
  },
};

test("tool_choice forces a call: the reply is a call of that function, its arguments fitting its parameters", async () => {
  for (const seed of [1, 2, 3]) {
    const { status, json } = await post({
      messages: [{ role: "user", content: "Weather in Oslo?" }],
      tools: [SHORT_WEATHER, CLOCK],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: 1500,
      temperature: 1,
      seed,
    });
    assert.equal(status, 200, json.error?.message);
    const choice = json.choices[0];
    assert.equal(choice.finish_reason, "tool_calls", JSON.stringify(choice));
    const calls = choice.message.tool_calls as { function: { name: string; arguments: string } }[];
    assert.equal(calls.length, 1);
    assert.equal(calls[0].function.name, "get_weather");
    const args = JSON.parse(calls[0].function.arguments) as Record<string, unknown>;
    assert.deepEqual(Object.keys(args), ["city"]);
    assert.equal(typeof args.city, "string");
  }
  // "required": a call of one of the tools.
  const { json } = await post({
    messages: [{ role: "user", content: "Time?" }],
    tools: [SHORT_WEATHER, CLOCK],
    tool_choice: "required",
    max_tokens: 1500,
    temperature: 1,
    seed: 9,
  });
  const call = (json.choices[0].message.tool_calls as { function: { name: string; arguments: string } }[])[0];
  assert.ok(["get_weather", "get_time"].includes(call.function.name));
  const args = JSON.parse(call.function.arguments) as Record<string, unknown>;
  if (call.function.name === "get_time") assert.ok(["UTC", "CET"].includes(args.zone as string));
  else assert.equal(typeof args.city, "string");
});

test("a forced call streams as a tool_calls chunk", async () => {
  const res = await fetch(server.url + "/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      messages: [{ role: "user", content: "Time?" }],
      tools: [CLOCK],
      tool_choice: { type: "function", function: { name: "get_time" } },
      stream: true,
      max_tokens: 1500,
      temperature: 0,
    }),
  });
  assert.equal(res.status, 200);
  const events = (await res.text())
    .split("\n\n")
    .filter((e) => e.startsWith("data: ") && e !== "data: [DONE]")
    .map(
      (e) => JSON.parse(e.slice(6)) as { choices: { delta: Record<string, unknown>; finish_reason: string | null }[] },
    );
  const calls = events.flatMap((e) => (e.choices[0].delta.tool_calls as { function: { name: string } }[]) ?? []);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].function.name, "get_time");
  assert.equal(events[events.length - 1].choices[0].finish_reason, "tool_calls");
});

test("tool_choice and response_format mistakes are 400s naming the field", async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { tools: [WEATHER], tool_choice: { type: "function", function: { name: "nope" } } },
      /"nope", which is not one of/,
    ],
    [{ tool_choice: "required" }, /no "tools"/],
    [{ tools: [WEATHER], tool_choice: "sometimes" }, /"tool_choice" must be/],
    [
      {
        tools: [
          {
            type: "function",
            function: {
              name: "f",
              parameters: { type: "object", properties: { s: { type: "array", uniqueItems: true } } },
            },
          },
        ],
        tool_choice: "required",
      },
      /function "f": JSON schema at #\/properties\/s: "uniqueItems" is not supported/,
    ],
    [{ response_format: { type: "xml" } }, /"response_format.type"/],
    [{ response_format: { type: "json_schema", json_schema: { schema: {} } } }, /with a "name"/],
    [
      {
        response_format: {
          type: "json_schema",
          json_schema: { name: "x", schema: { type: "number", multipleOf: 0.5 } },
        },
      },
      /"multipleOf" is supported for integers/,
    ],
    [
      { tools: [WEATHER], tool_choice: "required", response_format: { type: "json_object" } },
      /cannot both decide the reply/,
    ],
  ];
  for (const [body, msg] of cases) {
    const { status, json } = await post({ messages: [{ role: "user", content: "hi" }], ...body });
    assert.equal(status, 400, JSON.stringify(body));
    assert.match(json.error!.message, msg);
  }
});

test("response_format: json_object and json_schema replies parse and fit (a random model, any temperature)", async () => {
  const schema = {
    type: "object",
    properties: {
      answer: { type: "integer" },
      unit: { enum: ["m", "km"] },
      notes: { type: "array", items: { type: "string", maxLength: 8 }, maxItems: 2 },
    },
    required: ["answer", "unit", "notes"],
  };
  for (const [format, temperature] of [
    [{ type: "json_schema", json_schema: { name: "distance", schema, strict: true } }, 0],
    [{ type: "json_schema", json_schema: { name: "distance", schema } }, 1.2],
    [{ type: "json_object" }, 0.8],
  ] as const) {
    const { status, json } = await post({
      messages: [{ role: "user", content: "How far?" }],
      response_format: format,
      max_tokens: 1500,
      temperature,
      seed: 4,
    });
    assert.equal(status, 200, json.error?.message);
    const content = json.choices[0].message.content!;
    assert.equal(json.choices[0].finish_reason, "stop", content);
    const v = JSON.parse(content) as Record<string, unknown>;
    assert.ok(typeof v === "object" && v !== null && !Array.isArray(v), content);
    if (format.type === "json_schema") {
      assert.deepEqual(Object.keys(v), ["answer", "unit", "notes"]);
      assert.ok(Number.isInteger(v.answer) && ["m", "km"].includes(v.unit as string), content);
      assert.ok(
        (v.notes as string[]).every((n) => typeof n === "string" && [...n].length <= 8),
        content,
      );
    }
  }
});

test("forced calls take each template's form, and what the grammar accepts parses as that call", () => {
  const names = new Set(["get_weather", "get_time"]);
  const forms: [string, string, string][] = [
    [
      "{% if tools %}<tool_call>{% endif %}",
      '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>',
      '{"zone":"CET"}',
    ],
    [
      "{{ '[TOOL_CALLS]' }}",
      '[TOOL_CALLS][{"name": "get_time", "arguments": {"zone": "UTC", "precise": true}}]',
      '{"zone":"UTC","precise":true}',
    ],
    ["{{ tools | tojson }}", '{"name": "get_time", "parameters": {"zone": "UTC"}}', '{"zone":"UTC"}'],
  ];
  for (const [template, reply, args] of forms) {
    const grammar = forcedCallGrammar(template, [SHORT_WEATHER, CLOCK], "get_time");
    let stacks = initial(grammar);
    for (const b of new TextEncoder().encode(reply)) {
      stacks = feed(stacks, b);
      assert.ok(stacks.length > 0, `${reply} refused`);
    }
    assert.ok(finished(stacks), `${reply} is a whole call`);
    assert.deepEqual(parseToolCalls(reply, names).calls, [{ name: "get_time", arguments: args }]);
    // Another function, or arguments outside the schema, are refused.
    for (const wrong of [reply.replace("get_time", "get_weather"), reply.replace(/"(CET|UTC)"/, '"PST"')]) {
      let st = initial(grammar);
      for (const b of new TextEncoder().encode(wrong)) st = feed(st, b);
      assert.equal(st.length, 0, `${wrong} must be refused`);
    }
  }
});

test("tool_choice auto: after the marker the model writes, a call is held to the tools (Hermes, Mistral and Llama forms)", () => {
  const names = new Set(["get_weather", "get_time"]);
  const hermes = callAfterMarker("{% if tools %}<tool_call>{% endif %}", [SHORT_WEATHER, CLOCK])!;
  assert.equal(hermes.trigger, "<tool_call>");
  const mistral = callAfterMarker("{{ '[TOOL_CALLS]' }}", [SHORT_WEATHER, CLOCK])!;
  assert.equal(mistral.trigger, "[TOOL_CALLS]");
  const llama = callAfterMarker("{{ tools | tojson }}", [SHORT_WEATHER, CLOCK]);
  assert.equal(llama.trigger, "<|python_tag|>", "Llama 3's marker");
  assert.equal(llama.opening, '{"name"', "and its bare object, where the reply opens with one");
  const cases: [typeof hermes, string, string][] = [
    [hermes, '\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>', '{"zone":"UTC"}'],
    [mistral, '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]', '{"city":"Oslo"}'],
    [llama, '{"name": "get_time", "parameters": {"zone": "CET"}}', '{"zone":"CET"}'],
  ];
  for (const [{ trigger, grammar }, after, args] of cases) {
    let stacks = initial(grammar, true);
    for (const b of new TextEncoder().encode(after)) {
      stacks = feed(stacks, b);
      assert.ok(stacks.length > 0, `${after} refused`);
    }
    assert.ok(finished(stacks));
    assert.equal(parseToolCalls(`Sure. ${trigger}${after}`, names).calls[0].arguments, args);
    let wrong = initial(grammar, true);
    for (const b of new TextEncoder().encode(after.replace(/get_\w+/, "launch"))) wrong = feed(wrong, b);
    assert.equal(wrong.length, 0, "a function that is not one of the tools is refused");
  }
});

// A Mistral-style vocabulary: [TOOL_CALLS] is a special token (id 272) beside <s> and </s>.
const MARKER_ID = 272;
function mistralTokenizer(): Record<string, unknown> {
  const tok = sentencePieceTokenizer(300);
  const model = tok.model as { vocab: Record<string, number> };
  const piece = Object.keys(model.vocab).find((p) => model.vocab[p] === MARKER_ID)!;
  delete model.vocab[piece];
  model.vocab["[TOOL_CALLS]"] = MARKER_ID;
  const added = tok.added_tokens as Record<string, unknown>[];
  added.push({ ...added[2], id: MARKER_ID, content: "[TOOL_CALLS]" });
  return tok;
}
const MISTRAL_TEMPLATE = `{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}
{%- for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]
{%- elif m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}</s>{% else %}{{ m.content }}</s>{% endif %}{% endfor %}`;

test("a tool-call marker that is a special token stays in the text, has its bytes, fires the trigger, and forced calls use it", async (t) => {
  const dir = join(tempDir(t), "mistral");
  await makeModel({ arch: "llama", dtype: "f32", seed: 8, shape: { vocab: 300, maxPositions: 2048 }, out: dir });
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(mistralTokenizer()));
  writeFileSync(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({ bos_token: "<s>", eos_token: "</s>", chat_template: MISTRAL_TEMPLATE }),
  );
  const model = loadModel(dir);
  const tok = model.tokenizer;
  const call = tok.encode('[{"name": "get_time", "arguments": {"zone": "UTC"}}]', false); // "▁[{" …: the space after the marker
  // Decoding drops </s> as ever but keeps the marker, alone or amid other tokens.
  assert.equal(
    tok.decode([MARKER_ID, ...call, 2]),
    '[TOOL_CALLS] [{"name": "get_time", "arguments": {"zone": "UTC"}}]',
  );
  assert.equal(tok.decode([2, MARKER_ID]), "[TOOL_CALLS]");
  assert.equal(tok.decode([1, 2]), "");
  const bytes = tok.tokenBytes();
  assert.equal(new TextDecoder().decode(bytes[MARKER_ID]!), "[TOOL_CALLS]");
  assert.equal(bytes[2], null, "other special tokens have no bytes");
  // The marker as one token starts the auto-call grammar.
  const vocab = new TokenVocabulary(bytes, model.eosIds);
  const { trigger, grammar } = callAfterMarker(tok.templateSource, [CLOCK]);
  const lazy = new TriggeredGrammar(new TextEncoder().encode(trigger), grammar, vocab);
  lazy.advance(MARKER_ID);
  assert.ok(lazy.current, "the special token is the trigger");
  for (const id of call) lazy.advance(id);
  assert.equal(lazy.current, null, "the call completes the grammar");
  model.close();

  // Through the endpoint: a forced call may begin with the special token (the bias makes this random
  // model prefer it to spelling "[" byte by byte), and the reply's call parses with the marker kept.
  const mHost = new EngineHost({ dataDir: join(dir, "data"), contextLength: 2048 });
  await mHost.handle({ id: 0, type: "model.load", path: dir }, () => {});
  const mServer = await serve({ host: mHost, port: 0 });
  try {
    const res = await fetch(mServer.url + "/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({
        messages: [{ role: "user", content: "What time is it?" }],
        tools: [CLOCK],
        tool_choice: "required",
        logit_bias: { [MARKER_ID]: 100 },
        logprobs: true,
        max_tokens: 1000,
        temperature: 0,
      }),
    });
    const json = (await res.json()) as {
      choices: {
        message: { tool_calls?: { function: { name: string; arguments: string } }[] };
        logprobs: { content: { token: string }[] };
        finish_reason: string;
      }[];
    };
    assert.equal(res.status, 200, JSON.stringify(json));
    const choice = json.choices[0];
    assert.equal(choice.logprobs.content[0].token, "[TOOL_CALLS]", "the first token is the special marker");
    assert.equal(choice.finish_reason, "tool_calls");
    assert.equal(choice.message.tool_calls![0].function.name, "get_time");
    assert.ok(
      ["UTC", "CET"].includes((JSON.parse(choice.message.tool_calls![0].function.arguments) as { zone: string }).zone),
    );
    // logit_bias is checked: not a token id, out of range, outside the vocabulary.
    for (const [bias, pattern] of [
      [[1], /"logit_bias" must be an object/],
      [{ x: 1 }, /"x" is not a token id/],
      [{ 5: 101 }, /must be a number in -100..100/],
      [{ 300: 1 }, /token 300 is outside the vocabulary/],
    ] as const) {
      const bad = await fetch(mServer.url + "/v1/chat/completions", {
        method: "POST",
        body: JSON.stringify({ messages: [{ role: "user", content: "x" }], logit_bias: bias }),
      });
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { error: { message: string } }).error.message, pattern);
    }
  } finally {
    await mServer.close();
    mHost.close();
  }
});

test("the app's protocol: generate with tools required gives the call in the summary; auto without a call gives none", async () => {
  const ask = async (msg: Record<string, unknown>) => {
    const replies: { ok: boolean; result?: unknown; error?: { message: string } }[] = [];
    await host.handle(msg, (m) => {
      if (m.type === "reply") replies.push(m as (typeof replies)[number]);
    });
    return replies[0];
  };
  type Summary = {
    toolCalls?: { id: string; function: { name: string; arguments: string } }[];
    content?: string;
    text: string;
    finishReason: string;
  };
  const messages = [{ role: "user", content: "What time is it?" }];
  const base = { type: "generate", messages, sampling: { temperature: 0 }, maxTokens: 600 };
  const forced = (await ask({ id: 1, ...base, tools: [CLOCK], toolChoice: "required" })).result as Summary;
  assert.equal(forced.finishReason, "stop", forced.text);
  assert.equal(forced.toolCalls?.length, 1, forced.text);
  assert.equal(forced.toolCalls![0].function.name, "get_time");
  assert.ok(["UTC", "CET"].includes((JSON.parse(forced.toolCalls![0].function.arguments) as { zone: string }).zone));
  assert.match(forced.toolCalls![0].id, /^call_/);
  assert.equal(forced.content, "");
  // auto: this random model writes no call of its own, so the summary has none.
  const auto = (await ask({ id: 2, ...base, maxTokens: 6, tools: [CLOCK], toolChoice: "auto" })).result as Summary;
  assert.equal(auto.toolCalls, undefined);
  // A function whose parameters a grammar cannot hold is refused, naming it.
  const bad = { type: "function", function: { name: "odd", parameters: { type: "object", not: {} } } };
  const refused = await ask({ id: 3, ...base, tools: [bad], toolChoice: "required" });
  assert.equal(refused.ok, false);
  assert.match(refused.error!.message, /"tools": function "odd": .*not/);
});

test("guided replies (vLLM's, llama.cpp's grammar): a choice, a regex, a GBNF grammar or a JSON schema, on both endpoints; mistakes are 400s", async () => {
  const send = async (path: string, body: Record<string, unknown>) => {
    const res = await fetch(server.url + path, {
      method: "POST",
      body: JSON.stringify({ max_tokens: 60, temperature: 1, seed: 2, ...body }),
    });
    const json = (await res.json()) as {
      choices: { text?: string; message?: { content: string }; finish_reason: string }[];
      error?: { message: string };
    };
    return { status: res.status, json, text: json.choices?.[0].text ?? json.choices?.[0].message?.content ?? "" };
  };
  const chat = { messages: [{ role: "user", content: "Rate it." }] };
  const text = { prompt: "Rating:" };
  for (const [path, base] of [
    ["/v1/chat/completions", chat],
    ["/v1/completions", text],
  ] as const) {
    const picked = await send(path, { ...base, guided_choice: ["good", "bad", "so-so"] });
    assert.equal(picked.status, 200, picked.json.error?.message);
    assert.match(picked.text, /^(good|bad|so-so)$/);
    const phone = await send(path, { ...base, structured_outputs: { regex: "[0-9]{3}-[0-9]{4}" } });
    assert.match(phone.text, /^[0-9]{3}-[0-9]{4}$/);
    assert.equal(phone.json.choices[0].finish_reason, "stop");
    const gbnf = await send(path, { ...base, grammar: 'root ::= "(" [a-z] "," [0-9]+ ")"' });
    assert.match(gbnf.text, /^\([a-z],[0-9]+\)$/);
    const doc = await send(path, {
      ...base,
      max_tokens: 400,
      guided_json: { type: "object", properties: { n: { enum: [1, 2] } }, required: ["n"] },
    });
    assert.ok([1, 2].includes((JSON.parse(doc.text) as { n: number }).n), doc.text);
  }
  for (const [body, pattern] of [
    [{ guided_choice: [] }, /"guided_choice" must be a list of 1 to 256 non-empty strings/],
    [{ guided_regex: "(?=x)y" }, /"guided_regex": pattern .* lookaround/],
    [{ guided_regex: "a", guided_choice: ["b"] }, /only one guided reply per request/],
    [{ structured_outputs: { json: { uniqueItems: true } } }, /"structured_outputs.json": .*uniqueItems/],
    [{ structured_outputs: 3 }, /"structured_outputs" must be an object/],
    [{ grammar: 'root ::= root "a" | "b"' }, /"grammar": grammar: rule "root" is left-recursive/],
    [{ structured_outputs: { grammar: 5 } }, /"structured_outputs.grammar" must be a string/],
    [{ guided_regex: "a", response_format: { type: "json_object" } }, /cannot both decide the reply/],
  ] as const) {
    const r = await send("/v1/chat/completions", { ...chat, ...body });
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.json.error!.message, pattern);
  }
});
