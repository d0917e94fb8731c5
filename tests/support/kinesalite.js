// Starts kinesalite bound to 127.0.0.1 only (its own CLI listens on every interface).
// Usage: node kinesalite.js PORT [NODE_DIR]
// NODE_DIR is the folder whose node_modules holds kinesalite (scripts/setup installs it there);
// default: $LOGFERRY_KINESALITE_DIR, else <repo>/.tools/node.
'use strict';
const path = require('path');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node kinesalite.js PORT [NODE_DIR]');
  process.exit(2);
}
const nodeDir = process.argv[3] || process.env.LOGFERRY_KINESALITE_DIR ||
  path.join(__dirname, '..', '..', '.tools', 'node');

let kinesalite;
try {
  kinesalite = require(path.join(nodeDir, 'node_modules', 'kinesalite'));
} catch (err) {
  console.error(`kinesalite is not installed under ${nodeDir}: run scripts/setup (${err.message})`);
  process.exit(3);
}

// createStreamMs/deleteStreamMs/updateStreamMs 0: streams are ACTIVE at once, so tests need no polling.
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000 });
server.on('error', (err) => {
  console.error(`kinesalite failed on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`kinesalite listening on 127.0.0.1:${port}`);
});

// Exit promptly when the parent asks (tests send SIGTERM/SIGKILL; scripts send SIGTERM).
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
