// The CLI's weighted/composed query syntax (uniretrieve/search/query.py) as typed in the search box.
// A composed query has a leading weight ("2:dog") or a standalone + / - between terms. The server splits it like
// a shell (shlex), so unquoted input is quoted term by term here: `2:red car + on a beach` needs no quotes.

const WEIGHT = /^"?-?\d+(?:\.\d+)?:\S/;
const OPERATOR = /\s[+-]\s/;
const TERM_WEIGHT = /^(-?\d+(?:\.\d+)?):([\s\S]+)$/;

export function isComposed(text) {
  const t = text.trim();
  return WEIGHT.test(t) || OPERATOR.test(t);
}

// { tokens, wire }: the terms and operators, and the string sent as the API's `query`. Input holding double quotes
// is taken as written on a command line; otherwise the terms are the parts between standalone operators.
export function queryTokens(text) {
  const t = text.trim();
  if (t.includes('"')) {
    const tokens = [];
    const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
    let m;
    while ((m = re.exec(t))) tokens.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]);
    return { tokens, wire: t };
  }
  const tokens = t.split(/\s+([+-])\s+/).map((part) => part.trim());
  const wire = tokens.map((tok, i) => (i % 2 ? tok : '"' + tok.replace(/[\\"]/g, "\\$&") + '"')).join(" ");
  return { tokens, wire };
}

// The weighted terms the server will combine ({weight: sign × weight, text}), or null when the syntax is off.
export function queryTerms(tokens) {
  const terms = [];
  let sign = 1;
  let expectTerm = true;
  for (const tok of tokens) {
    if ((tok === "+" || tok === "-") && !expectTerm) {
      sign = tok === "+" ? 1 : -1;
      expectTerm = true;
      continue;
    }
    if (!expectTerm || !tok) return null;
    const m = TERM_WEIGHT.exec(tok);
    terms.push({ weight: sign * (m ? Number(m[1]) : 1), text: m ? m[2] : tok });
    expectTerm = false;
  }
  return expectTerm ? null : terms;
}

export function fmtWeight(w) {
  return Number.isInteger(w) ? String(w) : String(Number(w.toFixed(3)));
}
