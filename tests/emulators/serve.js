// Start kinesalite or dynalite on 127.0.0.1 only (their CLIs bind every interface).
// Usage: node serve.js kinesalite|dynalite PORT
//
// SIGUSR2 moves the emulator's clock 301 s forward, so that tests can meet kinesalite's real
// ExpiredIteratorException (iterators live 300 s) without waiting five minutes.
const [kind, port] = process.argv.slice(2);

let offset = 0;
const realNow = Date.now;
Date.now = () => realNow() + offset;
process.on('SIGUSR2', () => {
  offset += 301000;
  process.stdout.write(`clock moved forward: offset ${offset} ms\n`);
});

const opts = kind === 'kinesalite'
  ? { createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 200 }
  : { createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 };
const server = require(kind)(opts);
server.listen(Number(port), '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(`${kind} listening on 127.0.0.1:${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
