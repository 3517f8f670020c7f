// k6 provides `console` (its output goes to k6's log), but @types/k6 does not declare it and
// the DOM / Node typings would bring in globals k6 does not have. This declares just that.

interface K6Console {
  log(...data: unknown[]): void;
  info(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
  debug(...data: unknown[]): void;
}

declare var console: K6Console;
