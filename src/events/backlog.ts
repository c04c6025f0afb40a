/**
 * What one socket has been sent and has not yet acknowledged. The Workers
 * runtime gives no send-queue size (`bufferedAmount`) nor any drain signal, so
 * a client proves it keeps up by acknowledging: `{"type":"ping","last_seq":N}`
 * (the SDK does this as it processes events). Bytes above the limit mean the
 * client is not reading fast enough, whatever sits in the buffers between us.
 */
export class Backlog {
  private seqs: number[] = [];
  /** Bytes each counts against the limit: 0 for a replayed frame (see sent). */
  private sizes: number[] = [];
  private head = 0;
  private total = 0;

  /**
   * `counted: false` for a resume's replay: bounded by the hub's replayMaxEvents, sent in one go, and the client
   * cannot acknowledge it before the next live event is sent. Counted, a healthy client resuming after a long
   * outage was cut off (1013) by the first live event after a large replay.
   */
  sent(seq: number, bytes: number, counted = true): void {
    const countedBytes = counted ? bytes : 0;
    this.seqs.push(seq);
    this.sizes.push(countedBytes);
    this.total += countedBytes;
  }

  /** Everything up to and including `seq` has been received. */
  ack(seq: number): void {
    while (this.head < this.seqs.length && this.seqs[this.head] <= seq) {
      this.total -= this.sizes[this.head];
      this.head += 1;
    }
    // Compact now and then, so an acknowledged prefix does not stay in memory.
    if (this.head > 1_024 && this.head * 2 > this.seqs.length) {
      this.seqs = this.seqs.slice(this.head);
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
  }

  bytes(): number {
    return this.total;
  }
}
