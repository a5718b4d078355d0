#!/usr/bin/env node
// Reference client for a seqlstm export, outside Python, from raw text to labels.
//
//   node client.js EXPORT_DIR                 check every test vector, stage by stage
//   node client.js EXPORT_DIR --input FILE    predict: the JSON Lines `python -m serve predict` writes
//
// Reads only EXPORT_DIR/model.onnx, model.json, tokenizer.json and test_vectors.json, as docs/DESIGN.md
// ("Exports outside Python") specifies them. The check tokenizes each vector's text with the
// export's tokenizer.json (tokenizer.js), compares tokens, words and ids with the vector, runs
// onnxruntime-node on its own ids and checks every logit within the export's atol and every result
// object. One summary line on stdout; exit 0 when all agree, 1 on any mismatch (each one listed on
// stderr), 2 when the export (or the input) cannot be read.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');
const { BadTokenizer, textTokenizer, tokenEncoder } = require('./tokenizer');
const { decoderOf, pythonJson, resultOf } = require('./results');

const FORMAT = 2;
const MAX_LISTED = 20;

class BadExport extends Error {}

function readJson(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new BadExport(`${file}: cannot read it (${err.code || err.message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadExport(`${file}: corrupt JSON (${err.message})`);
  }
}

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');

// ---- metadata_props: ModelProto field 14, repeated StringStringEntryProto {1: key, 2: value} ----

function readVarint(buf, pos) {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= buf.length) throw new BadExport('model.onnx: truncated protobuf varint');
    const byte = buf[pos++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, pos];
    scale *= 128;
  }
}

// The fields of one protobuf message in buf[start, end): {field, wire, start, end} per field.
function* fields(buf, start, end) {
  let pos = start;
  while (pos < end) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    let next;
    if (wire === 0) [, next] = readVarint(buf, pos);
    else if (wire === 1) next = pos + 8;
    else if (wire === 5) next = pos + 4;
    else if (wire === 2) {
      let length;
      [length, pos] = readVarint(buf, pos);
      next = pos + length;
    } else throw new BadExport(`model.onnx: unsupported protobuf wire type ${wire}`);
    if (next > end) throw new BadExport('model.onnx: truncated protobuf message');
    yield { field, wire, start: pos, end: next };
    pos = next;
  }
}

function metadataProps(buf) {
  const props = {};
  for (const f of fields(buf, 0, buf.length)) {
    if (f.field !== 14 || f.wire !== 2) continue;
    const entry = {};
    for (const g of fields(buf, f.start, f.end)) {
      if (g.wire === 2) entry[g.field] = buf.toString('utf8', g.start, g.end);
    }
    props[entry[1] || ''] = entry[2] || '';
  }
  return props;
}

// ---- the export's description, cross-checked between model.json and the graph ----

// Compact JSON with sorted keys, as Python's json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":")).
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().filter((k) => value[k] !== null)
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function describe(dir, { vectors = true } = {}) {
  const meta = readJson(path.join(dir, 'model.json'));
  if (meta.export_format_version !== FORMAT) {
    throw new BadExport(`model.json: export_format_version ${meta.export_format_version} is not ${FORMAT} ` +
      '(format 1 has no metadata_props or test_vectors.json; re-export with `python -m export`)');
  }
  const files = [['onnx', 'model.onnx', meta.onnx], ['tokenizer', 'tokenizer.json', meta.tokenizer]];
  if (vectors) files.push(['test_vectors', 'test_vectors.json', meta.test_vectors]);
  const bytes = {};
  for (const [key, file, entry] of files) {
    if (!entry || entry.file !== file) {
      const hint = key === 'tokenizer' ? ' (an export from before tokenizer.json: re-export with `python -m export`)' : '';
      throw new BadExport(`model.json: ${key}.file must be ${file}${hint}`);
    }
    try {
      bytes[key] = fs.readFileSync(path.join(dir, file));
    } catch (err) {
      throw new BadExport(`${file}: cannot read it (${err.code || err.message})`);
    }
    if (sha256(bytes[key]) !== entry.sha256) {
      throw new BadExport(`${file}: sha256 ${sha256(bytes[key]).slice(0, 12)}... does not match model.json`);
    }
  }
  const props = metadataProps(bytes.onnx);
  const prop = (key) => {
    if (!(`seqlstm.${key}` in props)) throw new BadExport(`model.onnx: metadata_props lacks seqlstm.${key}`);
    return props[`seqlstm.${key}`];
  };
  const spec = {
    task: prop('task'),
    labels: JSON.parse(prop('labels')),
    padId: Number(prop('pad_id')),
    normalization: JSON.parse(prop('normalization')),
    postprocess: JSON.parse(prop('postprocess')),
  };
  const tokenizer = JSON.parse(bytes.tokenizer.toString('utf8'));
  const section = tokenizer.encode ?? {};
  const agree = [
    ['task', spec.task, meta.task],
    ['labels', canonical(spec.labels), canonical(meta.vocab.labels)],
    ['vocab_sha256', prop('vocab_sha256'), sha256(Buffer.from(canonical(meta.vocab), 'utf8'))],
    ['export_format_version', prop('export_format_version'), String(meta.export_format_version)],
    ['tokenizer', canonical(JSON.parse(prop('tokenizer'))), canonical(meta.tokenizer)],
    ['pad_id', spec.padId, section.pad_id, 'tokenizer.json encode'],
  ];
  for (const key of Object.keys(spec.normalization)) {
    agree.push([`normalization.${key}`, spec.normalization[key], meta.preprocess[key]]);
  }
  const fromEncode = { lowercase: section.words?.lowercase, digits_to_zero: section.words?.digits_to_zero,
    max_tokens: section.max_tokens, max_word_len: section.chars?.max_word_len, lexicon: section.words?.lexicon?.name };
  for (const [key, value] of Object.entries(fromEncode)) {
    if (value !== undefined) agree.push([`normalization.${key}`, spec.normalization[key], value, 'tokenizer.json encode']);
  }
  for (const [key, fromGraph, fromJson, source = 'model.json'] of agree) {
    if (fromGraph !== fromJson) {
      throw new BadExport(`model.onnx: metadata_props seqlstm.${key} is ${fromGraph}, ${source} gives ${fromJson}`);
    }
  }
  let tokenize;
  let encode;
  try {
    tokenize = textTokenizer(tokenizer);
    encode = tokenEncoder(tokenizer, meta.vocab);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    throw new BadTokenizer(`tokenizer.json: not the documented layout (${err.message})`);
  }
  return {
    meta,
    spec,
    tokenize,
    encode,
    vectors: vectors ? JSON.parse(bytes.test_vectors.toString('utf8')) : null,
    onnxPath: path.join(dir, 'model.onnx'),
  };
}

function feeds(encoded, names, padId) {
  const T = encoded.word_ids.length;
  const int64 = (values, dims) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), dims);
  const all = { words: () => int64(encoded.word_ids, [1, T]), lengths: () => int64([T], [1]) };
  if (encoded.chars) {
    const W = Math.max(1, ...encoded.word_lengths);
    const flat = encoded.chars.flatMap((row) => [...row, ...new Array(W - row.length).fill(padId)]);
    all.chars = () => int64(flat, [1, T, W]);
    all.word_lengths = () => int64(encoded.word_lengths, [1, T]);
  }
  const out = {};
  for (const name of names) {
    if (!all[name]) throw new BadExport(`model.onnx: unknown input ${name}`);
    out[name] = all[name]();
  }
  return out;
}

// The graph on one input (batch 1): a row of n_labels logits per token, or the text's one logit.
async function logitsOf(session, encoded, spec) {
  if (!encoded.word_ids.length) return null;
  const result = await session.run(feeds(encoded, session.inputNames, spec.padId));
  const flat = Array.from(result[session.outputNames[0]].data);
  if (!decoderOf(spec.postprocess).rows) return flat[0];
  const width = spec.labels.length;
  return Array.from({ length: flat.length / width }, (_, t) => flat.slice(t * width, (t + 1) * width));
}

const openSession = (onnxPath) => ort.InferenceSession.create(onnxPath, {
  executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1,
});

// Where the expected logits sit within atol of a tie or a threshold, a port's label may differ.
function nearTie(v, spec, atol) {
  if (v.logits === null) return false;
  return decoderOf(spec.postprocess).nearTie(v, spec.postprocess, atol);
}

async function check(dir) {
  const { meta, spec, tokenize, encode, vectors, onnxPath } = describe(dir);
  const atol = meta.atol;
  const session = await openSession(onnxPath);
  const problems = [];
  let logits = 0;
  let worst = 0;
  for (const v of vectors.vectors) {
    if (v.text !== null) {
      const tokens = tokenize(v.text);
      if (canonical(tokens) !== canonical(v.tokens)) {
        problems.push(`${v.name}: tokens ${canonical(tokens).slice(0, 80)} vs expected ${canonical(v.tokens).slice(0, 80)}`);
      }
    }
    const got = encode(v.tokens);
    for (const stage of ['truncated', 'words', 'word_ids', 'chars', 'word_lengths']) {
      if (stage in got && canonical(got[stage]) !== canonical(v[stage])) {
        problems.push(`${v.name}: ${stage} ${canonical(got[stage]).slice(0, 80)} vs expected ${canonical(v[stage]).slice(0, 80)}`);
      }
    }
    const out = await logitsOf(session, got, spec);
    const flat = out === null ? [] : [out].flat(2);
    const expected = v.logits === null ? [] : [v.logits].flat(2);
    if (flat.length !== expected.length) {
      problems.push(`${v.name}: ${flat.length} logits vs ${expected.length} expected`);
      continue;
    }
    let diff = 0;
    flat.forEach((x, i) => { diff = Math.max(diff, Math.abs(x - expected[i])); });
    diff = Number.isNaN(diff) ? Infinity : diff;
    logits += flat.length;
    worst = Math.max(worst, diff);
    if (!(diff <= atol)) problems.push(`${v.name}: max abs diff ${diff.toExponential(3)} vs atol ${atol}`);
    const result = pythonJson(resultOf(spec.labels, spec.postprocess, got.kept, out, got.truncated));
    if (result !== pythonJson(v.output) && !nearTie(v, spec, atol)) {
      problems.push(`${v.name}: output ${result.slice(-80)} vs expected ${pythonJson(v.output).slice(-80)}`);
    }
  }
  return { count: vectors.vectors.length, logits, worst, atol, problems, task: spec.task };
}

// `python -m serve predict --input FILE` (text format, --errors strict): one line in, one JSON line out.
// Lines end at "\n" (bytes); trailing "\r"s and "\n"s are dropped, and a UTF-8 byte order mark
// before the first line; bytes that are not UTF-8 stop the run naming FILE:LINE.
async function predict(dir, file) {
  const { spec, tokenize, encode, onnxPath } = describe(dir, { vectors: false });
  let data;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new BadExport(`--input ${file}: cannot read it (${err.code || err.message})`);
  }
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const session = await openSession(onnxPath);
  const out = [];
  let start = 0;
  for (let number = 1; start < data.length; number++) {
    let end = data.indexOf(0x0a, start);
    end = end < 0 ? data.length : end + 1;
    let line = data.subarray(number === 1 && data[0] === 0xef && data[1] === 0xbb && data[2] === 0xbf ? 3 : start, end);
    let stop = line.length;
    while (stop > 0 && (line[stop - 1] === 0x0a || line[stop - 1] === 0x0d)) stop--;
    line = line.subarray(0, stop);
    let text;
    try {
      text = decoder.decode(line);
    } catch (err) {
      throw new BadExport(`${file}:${number}: not valid UTF-8`);
    }
    const encoded = encode(tokenize(text));
    const logits = await logitsOf(session, encoded, spec);
    out.push(`${pythonJson(resultOf(spec.labels, spec.postprocess, encoded.kept, logits, encoded.truncated))}\n`);
    start = end;
  }
  process.stdout.write(out.join(''));
}

function parseArgs(argv) {
  if (argv.length === 1 && !argv[0].startsWith('-')) return { dir: argv[0] };
  if (argv.length === 3 && !argv[0].startsWith('-') && argv[1] === '--input') return { dir: argv[0], input: argv[2] };
  return null;
}

async function main(argv) {
  const args = parseArgs(argv);
  if (!args) {
    process.stderr.write('usage: node client.js EXPORT_DIR [--input FILE]\n');
    return 2;
  }
  let r;
  try {
    if (args.input !== undefined) {
      await predict(args.dir, args.input);
      return 0;
    }
    r = await check(args.dir);
  } catch (err) {
    if (!(err instanceof BadExport || err instanceof BadTokenizer || err instanceof SyntaxError || err.code === 'ENOENT')) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    return 2;
  }
  for (const line of r.problems.slice(0, MAX_LISTED)) process.stderr.write(`${line}\n`);
  if (r.problems.length > MAX_LISTED) process.stderr.write(`... and ${r.problems.length - MAX_LISTED} more\n`);
  const status = r.problems.length ? 'FAIL' : 'ok';
  process.stdout.write(`${status}: ${r.count} ${r.task} vectors, ${r.logits} logits, max abs diff ` +
    `${r.worst.toExponential(2)} vs atol ${r.atol}, ${r.problems.length} mismatches\n`);
  return r.problems.length ? 1 : 0;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
