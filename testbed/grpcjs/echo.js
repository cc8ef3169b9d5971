// The testbed's echo workload on @grpc/grpc-js-xds: the same modes, environment and HTTP
// API as testbed/cmd/echo (grpc-go), so a test runs either and reads the same answers.
//
//   node echo.js server   serves grpc.testing.TestService as an xDS server on every port
//                         of $PORTS at $POD_IP; UnaryCall answers with the cluster and pod
//                         that served it and the caller's SPIFFE ID, after the milliseconds
//                         of the x-echo-delay-ms metadata. $CONTROL_PORT serves the pod
//                         controls: ready once every port serves; POST /fail?v=true makes
//                         every call fail with Unavailable (v=false ends it).
//   node echo.js client   serves on $POD_IP:$PORTS
//                           GET /call?target=xds:///host:port&n=100   n calls, one by one
//                               (&header=name:value, repeated, sends request metadata)
//                           POST /load?target=...&interval=10ms        calls at a steady rate
//                           GET /results                               every call of the load
//                           POST /stop                                 ends the load
//                         and the pod controls.
//
// Both read their xDS bootstrap from GRPC_XDS_BOOTSTRAP.
'use strict';

const http = require('http');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const protoLoader = require('@grpc/proto-loader');

xds.register();

const proto = grpc.loadPackageDefinition(
  protoLoader.loadSync(path.join(__dirname, 'echo.proto'), { keepCase: false, defaults: true }));
const TestService = proto.grpc.testing.TestService;

const env = process.env;
const ports = (env.PORTS || '').split(',').filter((p) => p !== '');

// spiffeID returns the SPIFFE ID in a peer certificate's URI SANs, '' when none.
function spiffeID(cert) {
  for (const san of ((cert && cert.subjectaltname) || '').split(', ')) {
    if (san.startsWith('URI:spiffe://')) {
      return san.slice('URI:'.length);
    }
  }
  return '';
}

// podControls answers the testbed's pod controls (testbed/cmd/internal/podctl) and reports
// whether it handled the request.
function podControls(req, res, ready, url) {
  if (req.method === 'GET' && url.pathname === '/readyz') {
    const ok = ready();
    res.writeHead(ok ? 200 : 503).end(ok ? 'ok\n' : 'not ready\n');
    return true;
  }
  if (req.method === 'POST' && url.pathname === '/ready') {
    const v = url.searchParams.get('v');
    if (v !== 'true' && v !== 'false') {
      res.writeHead(400).end('v must be true or false\n');
    } else {
      readinessOff = v === 'false';
      res.end();
    }
    return true;
  }
  if (req.method === 'POST' && url.pathname === '/kill') {
    process.kill(process.pid, 'SIGKILL');
    return true;
  }
  return false;
}
let readinessOff = false;

function serve() {
  const server = new xds.XdsServer();
  let failing = false;
  server.addService(TestService.service, {
    unaryCall(call, callback) {
      const delay = call.metadata.get('x-echo-delay-ms');
      const ms = delay.length > 0 ? Number(delay[0]) : 0;
      if (!(ms >= 0)) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: 'x-echo-delay-ms: a number of milliseconds' });
        return;
      }
      setTimeout(() => {
        if (failing) {
          callback({ code: grpc.status.UNAVAILABLE, details: 'failing on purpose (POST /fail)' });
          return;
        }
        callback(null, {
          serverId: env.CLUSTER_NAME || '',
          hostname: env.POD_NAME || '',
          username: spiffeID(call.getAuthContext().sslPeerCertificate),
        });
      }, ms);
    },
  });
  const creds = new xds.XdsServerCredentials(grpc.ServerCredentials.createInsecure());
  const serving = new Map();
  for (const port of ports) {
    const addr = `${env.POD_IP}:${port}`;
    server.bindAsync(addr, creds, (err) => {
      if (err) {
        console.error(`${addr}: ${err.message}`);
        process.exit(1);
      }
    });
    // After bindAsync: the server knows the port only from then on.
    server.addServingStateListener(addr, (status) => {
      console.log(`${addr}: serving state ${grpc.status[status.code]} ${status.details}`);
      serving.set(addr, status.code === grpc.status.OK);
    });
  }
  if (env.CONTROL_PORT) {
    const ready = () => !readinessOff && ports.every((p) => serving.get(`${env.POD_IP}:${p}`));
    http.createServer((req, res) => {
      const url = new URL(req.url, 'http://pod');
      if (podControls(req, res, ready, url)) {
        return;
      }
      if (req.method === 'POST' && url.pathname === '/fail') {
        const v = url.searchParams.get('v');
        if (v !== 'true' && v !== 'false') {
          res.writeHead(400).end('v must be true or false\n');
          return;
        }
        failing = v === 'true';
        res.end();
        return;
      }
      res.writeHead(404).end();
    }).listen(Number(env.CONTROL_PORT), env.POD_IP);
  }
}

// goCode names a status code as grpc-go does (PERMISSION_DENIED → PermissionDenied), so
// that a test reads either client's errors alike.
function goCode(code) {
  if (code === grpc.status.OK) {
    return 'OK';
  }
  if (code === grpc.status.CANCELLED) {
    return 'Canceled';
  }
  return (grpc.status[code] || 'Unknown').toLowerCase().split('_').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}

// one makes one call and reports it as testbed/cmd/echo does.
function one(client, metadata, timeoutMs) {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    const millis = () => Number(process.hrtime.bigint() - start) / 1e6;
    const call = client.unaryCall({}, metadata, { deadline: Date.now() + timeoutMs }, (err, resp) => {
      if (err) {
        resolve({ ok: false, error: `rpc error: code = ${goCode(err.code)} desc = ${err.details}`, millis: millis() });
        return;
      }
      const ctx = call.getAuthContext();
      resolve({
        ok: true, cluster: resp.serverId, pod: resp.hostname, caller: resp.username, millis: millis(),
        peer: spiffeID(ctx && ctx.sslPeerCertificate),
      });
    });
  });
}

// parseMillis reads a Go duration of ms or s ("5ms", "1s"), NaN otherwise.
function parseMillis(d) {
  const m = /^([0-9.]+)(ms|s)$/.exec(d || '');
  if (!m) {
    return NaN;
  }
  return Number(m[1]) * (m[2] === 's' ? 1000 : 1);
}

function clientAPI() {
  const creds = new xds.XdsChannelCredentials(grpc.credentials.createInsecure());
  const clients = new Map();
  // The last load: a call every interval, each on its own, with a 1 s deadline; its
  // calls stay readable once it is stopped.
  let load = null;
  const stopLoad = () => {
    if (load) {
      clearInterval(load.timer);
      load.running = false;
    }
  };
  const clientFor = (target) => {
    if (!clients.has(target)) {
      clients.set(target, new TestService(target, creds));
    }
    return clients.get(target);
  };
  http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://pod');
    if (podControls(req, res, () => !readinessOff, url)) {
      return;
    }
    if (req.method === 'POST' && url.pathname === '/stop') {
      stopLoad();
      res.end();
      return;
    }
    if (req.method === 'GET' && url.pathname === '/results') {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify(load ? load.calls : []) + '\n');
      return;
    }
    const isLoad = req.method === 'POST' && url.pathname === '/load';
    if (!isLoad && (req.method !== 'GET' || url.pathname !== '/call')) {
      res.writeHead(404).end();
      return;
    }
    const target = url.searchParams.get('target') || '';
    if (!target.startsWith('xds:')) {
      res.writeHead(400).end('target: an xds: URI\n');
      return;
    }
    const metadata = new grpc.Metadata();
    for (const h of url.searchParams.getAll('header')) {
      const at = h.indexOf(':');
      if (at <= 0) {
        res.writeHead(400).end('header: name:value\n');
        return;
      }
      metadata.add(h.slice(0, at), h.slice(at + 1));
    }
    const client = clientFor(target);
    if (isLoad) {
      const interval = parseMillis(url.searchParams.get('interval'));
      if (!(interval > 0)) {
        res.writeHead(400).end('interval: a positive duration\n');
        return;
      }
      stopLoad();
      const current = { calls: [], start: process.hrtime.bigint(), running: true };
      current.timer = setInterval(() => {
        const at = Number(process.hrtime.bigint() - current.start) / 1e6;
        one(client, metadata, 1000).then((c) => {
          if (current.running) {
            current.calls.push({ at, ...c });
          }
        });
      }, interval);
      load = current;
      res.end();
      return;
    }
    const n = Math.max(Number(url.searchParams.get('n')) || 1, 1);
    const calls = [];
    for (let i = 0; i < n; i++) {
      calls.push(await one(client, metadata, 5000));
    }
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(calls) + '\n');
  }).listen(Number(ports[0]), env.POD_IP);
}

switch (process.argv[2]) {
  case 'server':
    serve();
    break;
  case 'client':
    clientAPI();
    break;
  default:
    console.error('usage: node echo.js server|client');
    process.exit(2);
}
