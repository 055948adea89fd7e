// Test worker: echoes every record of a request ring into a result ring until the request ring closes,
// then closes the result ring and exits. Started by test/ipc.test.ts.
import { SharedRing } from "../../src/ipc/ring.ts";

declare const self: Worker;

export interface EchoWorkerInit {
  requests: SharedArrayBuffer;
  results: SharedArrayBuffer;
  spinUs: number;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

self.onmessage = (event: MessageEvent<EchoWorkerInit>) => {
  const { requests, results, spinUs } = event.data;
  const req = SharedRing.attach(requests);
  const res = SharedRing.attach(results);
  self.postMessage("ready");
  for (;;) {
    const state = req.waitForData(60_000, spinUs);
    if (state === "closed") break;
    if (state === "timed-out") continue;
    for (let rec = req.read(); rec !== null; rec = req.read()) {
      // Result ring full: wake the reader and back off briefly, never drop.
      while (!res.tryWrite(rec)) {
        res.notify();
        Atomics.wait(sleeper, 0, 0, 0.05);
      }
    }
    res.notify();
  }
  res.close();
  process.exit(0);
};
