// How a long-running command (`proxy`, `xds serve`) learns it should stop: the caller's AbortSignal
// (tests, embedding), or else SIGTERM / SIGINT, whichever comes first.

/** Resolves once `signal` aborts or, without a signal, at the first SIGTERM or SIGINT. */
export function untilStopped(signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal !== undefined) {
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
      return;
    }
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
