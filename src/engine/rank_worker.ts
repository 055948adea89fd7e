// Main-thread handle of one rank Worker: its start-up handshake ("started" once the Worker runs, then
// "ready" once its model is loaded), errors after start-up, and its exit.
import type { RankInit, RankReady } from "../../workers/rank.ts";

export interface FollowerReady {
  type: "ready";
  rank: number;
}

export class RankWorker {
  /** Errors after "ready" (a rank failing mid-run); before it, `ready` rejects instead. */
  onError: (message: string) => void = () => {};
  readonly ready: Promise<RankReady | FollowerReady>;
  readonly exited: Promise<void>;
  private isReady = false;

  private constructor(
    private readonly worker: Worker,
    readonly rank: number,
    started: () => void,
  ) {
    let resolveReady: (r: RankReady | FollowerReady) => void = () => {};
    let rejectReady: (e: Error) => void = () => {};
    let resolveExited = () => {};
    this.ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    this.exited = new Promise<void>((resolve) => (resolveExited = resolve));
    const error = (message: string) => {
      if (this.isReady) this.onError(message);
      else rejectReady(new Error(`rank ${rank} failed to start: ${message}`));
    };
    worker.onmessage = (e: MessageEvent) => {
      const type = e.data?.type;
      if (type === "started") started();
      else if (type === "ready") {
        this.isReady = true;
        resolveReady(e.data);
      } else if (type === "error") error(String(e.data.message));
      else if (type === "exited") resolveExited();
    };
    worker.onerror = (e) => {
      started();
      error(`rank ${rank} crashed: ${e.message}`);
      resolveExited();
    };
  }

  /** Starts the Worker and resolves once it runs (Workers are spawned one at a time). */
  static spawn(init: RankInit): Promise<RankWorker> {
    return new Promise((resolve) => {
      const worker = new Worker(new URL("../../workers/rank.ts", import.meta.url).href);
      const handle: RankWorker = new RankWorker(worker, init.rank, () => resolve(handle));
      worker.postMessage(init);
    });
  }

  terminate(): void {
    this.worker.terminate();
  }
}
