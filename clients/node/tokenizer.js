// Raw text -> tokens -> the graph's inputs, from an export's tokenizer.json and model.json alone.
//
// Follows docs/DESIGN.md ("Exports outside Python"): the description's patterns are ECMAScript
// regular expressions for the `u` flag, used as they are; nothing here knows a Treebank rule.
'use strict';

const FORMAT = 'seqlstm-tokenizer';
const VERSIONS = [1];

class BadTokenizer extends Error {}

function pattern(source, flags, where) {
  try {
    return new RegExp(source, flags);
  } catch (err) {
    throw new BadTokenizer(`${where}: not a valid pattern (${err.message.slice(0, 80)})`);
  }
}

// `replace` parts: literal strings and group numbers (0 = the whole match; an unmatched group is '').
function replacer(parts) {
  return (match, ...rest) => parts.map((p) => (typeof p === 'string' ? p : (p === 0 ? match : rest[p - 1] ?? ''))).join('');
}

// [[first, last], ...] code point ranges as a class body.
const classBody = (spans) => spans.map(([a, b]) => (a === b ? `\\u{${a.toString(16)}}` :
  `\\u{${a.toString(16)}}-\\u{${b.toString(16)}}`)).join('');

// Text -> tokens: URL matches become the url token; the steps run on the text between them.
function textTokenizer(desc) {
  if (desc.format !== FORMAT || !VERSIONS.includes(desc.version)) {
    throw new BadTokenizer(`tokenizer.json: format ${desc.format} version ${desc.version} is not ${FORMAT} ${VERSIONS}`);
  }
  const url = pattern(desc.url.find, 'gu', 'tokenizer.json: url.find');
  const runs = [[]];
  const pads = [];
  let split = null;
  desc.steps.forEach((step, i) => {
    const where = `tokenizer.json: steps[${i}]`;
    if (split) throw new BadTokenizer(`${where}: the split step must be the last one`);
    if (step.op === 'replace') runs[runs.length - 1].push([pattern(step.find, 'gu', where), replacer(step.replace)]);
    else if (step.op === 'pad') {
      pads.push(step.text);
      runs.push([]);
    } else if (step.op === 'split') split = pattern(step.on, 'u', where);
    else throw new BadTokenizer(`${where}: unknown op ${step.op}`);
  });
  if (!split) throw new BadTokenizer('tokenizer.json: steps must end with a split step');
  const words = (text) => {
    runs.forEach((rules, i) => {
      if (i) text = `${pads[i - 1]}${text}${pads[i - 1]}`;
      for (const [find, sub] of rules) text = text.replace(find, sub);
    });
    return text.split(split).filter((t) => t.length > 0);
  };
  return (text) => {
    const tokens = [];
    let start = 0;
    for (const m of text.matchAll(url)) {
      tokens.push(...words(text.slice(start, m.index)), desc.url.token);
      start = m.index + m[0].length;
    }
    tokens.push(...words(text.slice(start)));
    return tokens;
  };
}

// Unknown words' lexicon classes: `<unk:SIG>`, SIG the sorted parts of speech the lists give the word, and
// `X+` for each part of speech an inflection rule (ending -> base, stem >= min_stem code points) reaches.
function lexiconClass(spec, lists) {
  if (!spec) return () => undefined;
  const pos = new Map();
  for (const [name, letter] of Object.entries(spec.letters)) {
    for (const word of lists[name]) pos.set(word, (pos.get(word) ?? '') + letter);
  }
  const [prefix, suffix] = spec.class;
  return (word) => {
    const tags = new Set(pos.get(word) ?? '');
    const chars = Array.from(word); // code points, as the spec counts them
    for (const [letter, rules] of Object.entries(spec.inflections)) {
      for (const [ending, base] of rules) {
        const endLength = Array.from(ending).length;
        const stem = chars.length - endLength;
        if (stem >= spec.min_stem && word.endsWith(ending) &&
            (pos.get(chars.slice(0, stem).join('') + base) ?? '').includes(letter)) {
          tags.add(`${letter}+`);
        }
      }
    }
    return tags.size ? `${prefix}${[...tags].sort().join('')}${suffix}` : undefined;
  };
}

// Tokens -> {truncated, words, word_ids[, chars, word_lengths]} as the `encode` section says.
function tokenEncoder(desc, vocab) {
  const { encode } = desc;
  const w = encode.words;
  const digits = pattern(`[${classBody(desc.digits)}]`, 'gu', 'tokenizer.json: digits');
  const wordIds = new Map(vocab.words.map((word, i) => [word, i]));
  const classOf = lexiconClass(w.lexicon, vocab.lexicon);
  const normalize = (token) => {
    if (w.keep.includes(token)) return token;
    let word = w.lowercase ? token.toLowerCase() : token;
    if (w.digits_to_zero) word = word.replace(digits, '0');
    return word;
  };
  const wordId = (word) => wordIds.get(word) ?? wordIds.get(classOf(word)) ?? w.unk_id;
  const charIds = encode.chars ? new Map(vocab.chars.map((c, i) => [c, i])) : null;
  return (tokens) => {
    const kept = tokens.slice(0, encode.max_tokens);
    const words = kept.map(normalize);
    const out = { kept, truncated: kept.length < tokens.length, words, word_ids: words.map(wordId) };
    if (charIds) {
      const { max_word_len: maxLen, unk_id: unk } = encode.chars;
      out.chars = kept.map((t) => Array.from(t).slice(0, maxLen).map((c) => charIds.get(c) ?? unk));
      out.word_lengths = out.chars.map((row) => row.length);
    }
    return out;
  };
}

module.exports = { BadTokenizer, textTokenizer, tokenEncoder };
