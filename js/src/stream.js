// One reliable stream (the P2P stream, or one channel's): its epoch, its
// cursor, the messages held after a hole, and fetches to fill holes
// (docs/protocol.md, "Streams", "Client obligations").

export class Stream {
  /**
   * @param {object} io
   * @param {(item: any) => void} io.deliver  hand one message to the application
   * @param {(from: bigint, to: bigint) => void} io.gap  report a loss (to 0n: unknown end)
   * @param {(afterSeq: bigint) => Promise<{code: number, body?: any}>} io.fetch  send a FetchRequest
   * @param {() => void} [io.advanced]  the cursor moved (P2P: schedule an ack)
   */
  constructor(io) {
    this.io = io;
    this.epoch = 0n;
    this.cursor = 0n;
    this.held = new Map();
    this.fetching = false;
    this.progress = false;
    this.generation = 0;
    this._idleWaiters = [];
  }

  /** Resolves once no fetch is in flight (a leave waits for the replay it asked for). */
  whenIdle() {
    if (!this.fetching) return Promise.resolve();
    return new Promise((r) => this._idleWaiters.push(r));
  }

  _notifyIdle() {
    if (this.fetching) return;
    const w = this._idleWaiters;
    this._idleWaiters = [];
    for (const r of w) r();
  }

  /** Rule 2: a LoginReply / JoinReply / ResumedChannel sets epoch and cursor, dropping what is held. */
  reset(epoch, cursor) {
    this.epoch = epoch;
    this.cursor = cursor;
    this.held.clear();
    this.fetching = false;
    this.progress = false;
    this.generation++;
    this._notifyIdle();
  }

  /** A pushed message with its sequence number (0: unreliable). */
  push(seq, item) {
    if (seq === 0n) {
      this.io.deliver(item);
      return;
    }
    if (seq <= this.cursor || this.held.has(seq)) return; // rule 3: duplicate
    if (seq === this.cursor + 1n) {
      this.io.deliver(item);
      this.cursor = seq;
      this.progress = true;
      this._drain();
      this.io.advanced?.();
      return;
    }
    this.held.set(seq, item); // rule 5
    this.fetch(this.cursor);
  }

  /** A truncated replay (rule 7): fetch from the truncation point. */
  truncatedAt(firstNotReplayed) {
    this.fetch(firstNotReplayed - 1n);
  }

  /** Reports a gap from a LoginReply / JoinReply (rule 6); the cursor is already the reply's seq. */
  replyGap(gap) {
    if (gap) this.io.gap(gap.from, gap.to);
  }

  fetch(afterSeq) {
    if (this.fetching) return;
    this.fetching = true;
    this.progress = false;
    const gen = this.generation;
    this.io.fetch(afterSeq).then((res) => {
      if (gen !== this.generation) return; // the stream was reset meanwhile
      this.fetching = false;
      if (res.code === 0) this._fetched(res.body);
      // else: a lost link (the resume restarts the stream) or a left channel
      this._notifyIdle();
    });
  }

  _minHeld() {
    let m;
    for (const s of this.held.keys()) if (m === undefined || s < m) m = s;
    return m;
  }

  _skipTo(from, to, reportTo) {
    this.io.gap(from, reportTo);
    this.cursor = to;
  }

  _fetched(r) {
    const through = r.throughSeq;
    let moved = false;
    if (r.gap) {
      let from = r.gap.from;
      let to = r.gap.to === 0n ? through : r.gap.to; // a client SHOULD read to = 0 as through_seq
      const first = this._minHeld();
      if (first !== undefined && to >= first) to = first - 1n; // rule 8
      if (from <= this.cursor) from = this.cursor + 1n; // rule 6: only the part above the cursor
      if (from <= to) {
        this._skipTo(from, to, to);
        moved = true;
      }
    }
    const before = this.cursor;
    this._drain();
    if (this.cursor !== before) this.progress = true;
    if (r.more) {
      if (moved || this.cursor !== before) this.io.advanced?.();
      // Rule 7 says after through_seq; the cursor is the same when nothing is
      // missing, and never skips a message when something is.
      this.fetch(this.cursor);
      return;
    }
    // Rule 9: a complete reply.
    const first = this._minHeld();
    const target = first !== undefined ? first - 1n : through;
    if (this.cursor < target) {
      if (!this.progress) {
        this._skipTo(this.cursor + 1n, target, target);
        this._drain();
        moved = true;
        if (this.held.size > 0) this.fetch(this.cursor);
      } else {
        this.fetch(this.cursor);
      }
    } else if (this.held.size > 0) {
      this.fetch(this.cursor);
    }
    if (moved || this.cursor !== before) this.io.advanced?.();
  }

  _drain() {
    for (;;) {
      const next = this.cursor + 1n;
      if (!this.held.has(next)) return;
      const item = this.held.get(next);
      this.held.delete(next);
      this.io.deliver(item);
      this.cursor = next;
    }
  }
}
