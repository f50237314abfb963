/**
 * Structured logs: one JSON object a line when stderr is not a terminal (or LOG_FORMAT=json),
 * a readable line otherwise. Fields that could carry credentials are never printed.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const secret = /(key|kubeconfig|token|password|secret|cert)(data|pem)?$/i;

function redact(fields: Fields): Fields {
  const out: Fields = {};
  for (const [k, v] of Object.entries(fields)) out[k] = secret.test(k) ? '[redacted]' : v;
  return out;
}

export interface LoggerOptions {
  level?: Level;
  json?: boolean;
  write?: (line: string) => void;
}

export function createLogger(opts: LoggerOptions = {}, base: Fields = {}): Logger {
  const envLevel = process.env.LOG_LEVEL as Level | undefined;
  const level = opts.level ?? (envLevel && envLevel in order ? envLevel : 'info');
  const json = opts.json ?? (process.env.LOG_FORMAT === 'json' || !process.stderr.isTTY);
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const log = (lvl: Level, msg: string, fields: Fields = {}): void => {
    if (order[lvl] < order[level]) return;
    const all = redact({ ...base, ...fields });
    if (json) {
      write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...all }));
    } else {
      const kv = Object.entries(all)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      write(
        `${new Date().toISOString().slice(11, 19)} ${lvl.toUpperCase().padEnd(5)} ${msg}${kv ? ' ' + kv : ''}`,
      );
    }
  };
  return {
    debug: (m, f) => log('debug', m, f),
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
    child: (fields) => createLogger({ level, json, write }, { ...base, ...fields }),
  };
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = createLogger({ level: 'error', write: () => undefined });
