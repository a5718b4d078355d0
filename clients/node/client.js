#!/usr/bin/env node
// Reference client for a seqlstm export, outside Python: `node client.js EXPORT_DIR`.
//
// Reads only EXPORT_DIR/model.onnx, model.json and test_vectors.json, as docs/DESIGN.md
// ("Exports outside Python") specifies them. For every vector it does the normalization and id
// mapping itself from the spec (the vectors carry tokens, so it needs no Treebank tokenizer),
// compares each stage with the vector, runs onnxruntime-node on its own ids and checks every
// logit within the export's atol and every label. One summary line on stdout; exit 0 when all
// agree, 1 on any mismatch (each one listed on stderr), 2 when the export cannot be read.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

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

function describe(dir) {
  const meta = readJson(path.join(dir, 'model.json'));
  if (meta.export_format_version !== FORMAT) {
    throw new BadExport(`model.json: export_format_version ${meta.export_format_version} is not ${FORMAT} ` +
      '(format 1 has no metadata_props or test_vectors.json; re-export with `python -m export`)');
  }
  for (const [key, file] of [['onnx', 'model.onnx'], ['test_vectors', 'test_vectors.json']]) {
    if (!meta[key] || meta[key].file !== file) throw new BadExport(`model.json: ${key}.file must be ${file}`);
  }
  const onnxBytes = fs.readFileSync(path.join(dir, 'model.onnx'));
  const vectorBytes = fs.readFileSync(path.join(dir, 'test_vectors.json'));
  for (const [key, bytes] of [['onnx', onnxBytes], ['test_vectors', vectorBytes]]) {
    if (sha256(bytes) !== meta[key].sha256) {
      throw new BadExport(`${meta[key].file}: sha256 ${sha256(bytes).slice(0, 12)}... does not match model.json`);
    }
  }
  const props = metadataProps(onnxBytes);
  const prop = (key) => {
    if (!(`seqlstm.${key}` in props)) throw new BadExport(`model.onnx: metadata_props lacks seqlstm.${key}`);
    return props[`seqlstm.${key}`];
  };
  const spec = {
    task: prop('task'),
    labels: JSON.parse(prop('labels')),
    padId: Number(prop('pad_id')),
    unkId: Number(prop('unk_id')),
    normalization: JSON.parse(prop('normalization')),
    postprocess: JSON.parse(prop('postprocess')),
    inputs: Object.keys(JSON.parse(prop('inputs'))),
    url: JSON.parse(prop('tokenizer')).url_token,
  };
  const agree = [
    ['task', spec.task, meta.task],
    ['labels', canonical(spec.labels), canonical(meta.vocab.labels)],
    ['vocab_sha256', prop('vocab_sha256'), sha256(Buffer.from(canonical(meta.vocab), 'utf8'))],
    ['export_format_version', prop('export_format_version'), String(meta.export_format_version)],
  ];
  for (const key of Object.keys(spec.normalization)) {
    agree.push([`normalization.${key}`, spec.normalization[key], meta.preprocess[key]]);
  }
  for (const [key, fromGraph, fromJson] of agree) {
    if (fromGraph !== fromJson) {
      throw new BadExport(`model.onnx: metadata_props seqlstm.${key} is ${fromGraph}, model.json gives ${fromJson}`);
    }
  }
  const vectors = JSON.parse(vectorBytes.toString('utf8'));
  return { meta, spec, vectors, onnxPath: path.join(dir, 'model.onnx') };
}

// ---- text stages: normalization and id mapping (docs/DESIGN.md) ----

// Unknown words' lexicon classes (trainer/core/lexicon.py): with normalization.lexicon set, a word outside
// vocab.words takes the id of `<unk:SIG>`, SIG being the sorted parts of speech vocab.lexicon lists it
// under (n, v, a, r), plus `X+` for each part of speech an inflection rule reaches from it.
const POS_LETTERS = { noun: 'n', verb: 'v', adj: 'a', adv: 'r' };
const INFLECTIONS = {
  n: [['s', ''], ['ses', 's'], ['xes', 'x'], ['zes', 'z'], ['ches', 'ch'], ['shes', 'sh'], ['men', 'man'], ['ies', 'y']],
  v: [['s', ''], ['ies', 'y'], ['es', 'e'], ['es', ''], ['ed', 'e'], ['ed', ''], ['ing', 'e'], ['ing', '']],
  a: [['er', ''], ['est', ''], ['er', 'e'], ['est', 'e']],
};

function lexiconClass(lexicon) {
  if (!lexicon) return () => undefined;
  const pos = new Map();
  for (const [name, letter] of Object.entries(POS_LETTERS)) {
    for (const word of lexicon[name]) pos.set(word, (pos.get(word) ?? '') + letter);
  }
  return (word) => {
    const tags = new Set(pos.get(word) ?? '');
    const chars = Array.from(word); // code points, as Python counts them
    for (const [letter, rules] of Object.entries(INFLECTIONS)) {
      for (const [ending, base] of rules) {
        const stem = chars.length - ending.length;
        if (stem > 1 && word.endsWith(ending) && (pos.get(chars.slice(0, stem).join('') + base) ?? '').includes(letter)) {
          tags.add(letter + '+');
        }
      }
    }
    return tags.size ? `<unk:${[...tags].sort().join('')}>` : undefined;
  };
}

function encoder(meta, spec) {
  const { lowercase, digits_to_zero: digitsToZero, max_tokens: maxTokens, max_word_len: maxWordLen } =
    spec.normalization;
  const wordIds = new Map(meta.vocab.words.map((w, i) => [w, i]));
  const charIds = meta.vocab.chars ? new Map(meta.vocab.chars.map((c, i) => [c, i])) : null;
  const classOf = lexiconClass(spec.normalization.lexicon && meta.vocab.lexicon);
  const wordId = (word) => wordIds.get(word) ?? wordIds.get(classOf(word)) ?? spec.unkId;
  const normalize = (token) => {
    if (token === spec.url) return token;
    let word = lowercase ? token.toLowerCase() : token;
    if (digitsToZero) word = word.replace(/\p{Nd}/gu, '0'); // every Unicode decimal digit, like Python's \d
    return word;
  };
  return (tokens) => {
    const kept = tokens.slice(0, maxTokens);
    const words = kept.map(normalize);
    const out = { truncated: kept.length < tokens.length, words, word_ids: words.map(wordId) };
    if (charIds) {
      out.chars = kept.map((t) => Array.from(t).slice(0, maxWordLen).map((c) => charIds.get(c) ?? spec.unkId));
      out.word_lengths = out.chars.map((row) => row.length);
    }
    return out;
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

// ---- post-processing: argmax per token, or sigmoid, rounding and threshold ----

function tagsOf(rows, labels) {
  return rows.map((row) => labels[row.indexOf(Math.max(...row))]);
}

function sentimentOf(logit, pp, labels) {
  const prob = 1 / (1 + Math.exp(-Math.min(Math.max(logit, -60), 60)));
  const rounded = Math.round(prob * 10 ** pp.round) / 10 ** pp.round;
  return { prob_positive: rounded, label: rounded >= pp.threshold ? labels[1] : labels[0] };
}

// Smallest gap between the best and second-best logit: a label may only differ within 2 atol of it.
function margin(rows) {
  return Math.min(...rows.map((row) => {
    const sorted = [...row].sort((a, b) => b - a);
    return sorted[0] - sorted[1];
  }));
}

async function check(dir) {
  const { meta, spec, vectors, onnxPath } = describe(dir);
  const atol = meta.atol;
  const encode = encoder(meta, spec);
  const session = await ort.InferenceSession.create(onnxPath, {
    executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1,
  });
  const problems = [];
  let logits = 0;
  let worst = 0;
  for (const v of vectors.vectors) {
    const got = encode(v.tokens);
    for (const stage of ['truncated', 'words', 'word_ids', 'chars', 'word_lengths']) {
      if (stage in got && canonical(got[stage]) !== canonical(v[stage])) {
        problems.push(`${v.name}: ${stage} ${canonical(got[stage]).slice(0, 80)} vs expected ${canonical(v[stage]).slice(0, 80)}`);
      }
    }
    const result = await session.run(feeds(got, session.inputNames, spec.padId));
    const out = result[session.outputNames[0]];
    const flat = Array.from(out.data);
    const expected = spec.task === 'tagger' ? v.logits.flat() : [v.logits];
    if (flat.length !== expected.length) {
      problems.push(`${v.name}: ${flat.length} logits (shape ${out.dims}) vs ${expected.length} expected`);
      continue;
    }
    let diff = 0;
    flat.forEach((x, i) => { diff = Math.max(diff, Math.abs(x - expected[i])); });
    diff = Number.isNaN(diff) ? Infinity : diff;
    logits += flat.length;
    worst = Math.max(worst, diff);
    if (!(diff <= atol)) problems.push(`${v.name}: max abs diff ${diff.toExponential(3)} vs atol ${atol}`);
    if (spec.task === 'tagger') {
      const width = spec.labels.length;
      const rows = Array.from({ length: flat.length / width }, (_, t) => flat.slice(t * width, (t + 1) * width));
      const tags = tagsOf(rows, spec.labels);
      if (canonical(tags) !== canonical(v.tags) && margin(v.logits) > 2 * atol) {
        problems.push(`${v.name}: tags ${tags.join(' ').slice(0, 80)} vs expected ${v.tags.join(' ').slice(0, 80)}`);
      }
    } else {
      const s = sentimentOf(flat[0], spec.postprocess, spec.labels);
      const nearThreshold = Math.abs(v.prob_positive - spec.postprocess.threshold) <= atol;
      if ((s.label !== v.label && !nearThreshold) || Math.abs(s.prob_positive - v.prob_positive) > 1.5e-4) {
        problems.push(`${v.name}: ${s.label} ${s.prob_positive} vs expected ${v.label} ${v.prob_positive}`);
      }
    }
  }
  return { count: vectors.vectors.length, logits, worst, atol, problems, task: spec.task };
}

async function main(argv) {
  if (argv.length !== 1 || argv[0].startsWith('-')) {
    process.stderr.write('usage: node client.js EXPORT_DIR\n');
    return 2;
  }
  let r;
  try {
    r = await check(argv[0]);
  } catch (err) {
    if (!(err instanceof BadExport || err instanceof SyntaxError || err.code === 'ENOENT')) throw err;
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
