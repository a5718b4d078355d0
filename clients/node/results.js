// Logits -> the result objects `python -m serve predict` writes, byte for byte (docs/DESIGN.md,
// "Logits -> results" and "Output bytes").
'use strict';

// Python's round(x, d): the d-place decimal nearest the double's exact value, a tie to the even
// last digit. toFixed is exact but breaks ties upwards; a double lies exactly halfway between two
// d-place decimals only when x * 2^(d+1) is an odd integer (x * 10^d = odd * 5^d / 2, exact), so
// those are rounded here.
function pyRound(x, d) {
  const t = x * 2 ** (d + 1);
  if (Number.isInteger(t) && Math.abs(t % 2) === 1) {
    const lo = Math.floor(x * 10 ** d);
    return (lo % 2 === 0 ? lo : lo + 1) / 10 ** d;
  }
  return Number(x.toFixed(d));
}

const sigmoid = (x) => 1 / (1 + Math.exp(-Math.min(Math.max(x, -60), 60)));

// Python's float repr, for the numbers results hold (0 <= p <= 1, at most 4 places): JavaScript's
// shortest round-trip digits, which are Python's, except that a whole number keeps its ".0".
const pyFloat = (x) => (Number.isInteger(x) ? x.toFixed(1) : String(x));

// json.dumps(value, ensure_ascii=False, separators=(",", ":")): JSON.stringify's string escapes are
// Python's (\", \\, \b \f \n \r \t, other controls as \u00xx, everything else as is).
function pythonJson(value) {
  if (value === null) return 'null';
  if (typeof value === 'number') return pyFloat(value);
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(',')}]`;
  if (typeof value === 'object') {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${pythonJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

// How the graph's output becomes a result, keyed by seqlstm.postprocess's `op`, which the export writes from
// the task kind's decoder (trainer/core/tasks.py): a new kind adds its op here, never a branch on its name.
// `rows`: the output holds a row of label logits per token (else one number per text).
// `decode(labels, post, tokens, logits)`: logits are the rows or the number; null for no tokens.
// `nearTie(v, post, atol)`: the expected logits sit within atol of a tie or threshold, where a port's
// label may differ (its logits are only required within atol).
const DECODERS = {
  argmax: {
    rows: true,
    decode: (labels, post, tokens, logits) => ({
      tokens,
      tags: (logits ?? []).map((row) => labels[row.indexOf(Math.max(...row))]),
    }),
    nearTie: (v, post, atol) => margin(v.logits) <= 2 * atol,
  },
  sigmoid: {
    rows: false,
    decode: (labels, post, tokens, logit) => {
      if (logit === null) return { label: null, prob_positive: null };
      const prob = pyRound(sigmoid(logit), post.round);
      return { label: prob >= post.threshold ? labels[1] : labels[0], prob_positive: prob };
    },
    nearTie: (v, post, atol) => Math.abs(v.prob_positive - post.threshold) <= atol,
  },
};

function decoderOf(post) {
  const decoder = DECODERS[post.op];
  if (!decoder) throw new Error(`seqlstm.postprocess op ${JSON.stringify(post.op)} is not one this client knows`);
  return decoder;
}

// Smallest gap between the best and second-best logit: a label may only differ within 2 atol of it.
function margin(rows) {
  return Math.min(...rows.map((row) => {
    const sorted = [...row].sort((a, b) => b - a);
    return sorted[0] - sorted[1];
  }));
}

// `post`: the graph's seqlstm.postprocess.
function resultOf(labels, post, tokens, logits, truncated) {
  const out = decoderOf(post).decode(labels, post, tokens, logits);
  if (truncated) out.truncated = true;
  return out;
}

module.exports = { decoderOf, pyRound, pythonJson, resultOf };
