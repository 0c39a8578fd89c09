// Newline framing of a watch stream in linear time with a bounded line. Chunks are kept as they
// arrive and each byte is scanned once (the search starts in the newest chunk, never at the start of
// the buffered line), so a peer that sends a huge line without a newline costs O(bytes) and is cut
// off at `maxLineBytes` instead of growing memory and blocking the event loop.

export class LineTooLongError extends Error {
  constructor(readonly limitBytes: number) {
    super(`a line exceeded ${limitBytes} bytes`);
  }
}

export class LineSplitter {
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly maxLineBytes: number) {}

  /** Feed one chunk; `onLine` gets every complete line (without the newline). Throws LineTooLongError. */
  push(chunk: Buffer, onLine: (line: Buffer) => void): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      if (this.pendingBytes + piece.length > this.maxLineBytes) throw new LineTooLongError(this.maxLineBytes);
      let line: Buffer;
      if (this.pending.length === 0) line = piece;
      else {
        this.pending.push(piece);
        line = Buffer.concat(this.pending, this.pendingBytes + piece.length);
        this.pending.length = 0;
        this.pendingBytes = 0;
      }
      onLine(line);
      start = nl + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.pendingBytes += rest.length;
      if (this.pendingBytes > this.maxLineBytes) throw new LineTooLongError(this.maxLineBytes);
      this.pending.push(rest);
    }
  }

  /** Bytes of an unfinished line (a stream that ends here ended mid-event). */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }
}
