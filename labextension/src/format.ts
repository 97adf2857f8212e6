/**
 * Pure functions from the server's records to what the user reads: no I/O, no DOM.
 *
 * A death is the `why --json` dict of DESIGN.md (plus `server`, `kernel_name`, `notebook` where the server
 * knows them); a kernel state is the answer of `GET /api/kernel-sentinel/kernels/ID`.
 */

/** The schema id of the server extension's death event (fixed between the server and the lab streams). */
export const DEATH_SCHEMA = 'https://events.kernel-sentinel.dev/kernel_death';

/** Lab cuts notification messages at 140 characters; we cut first, at a word, so the cut is ours. */
export const MAX_MESSAGE = 140;

export interface IDeath {
  kernel_id?: string;
  death_id?: number;
  died_at?: number;
  cause?: string;
  summary?: string;
  headline?: string;
  remedy?: string;
  exit?: { code?: number; signal?: string } | null;
  cell?: { execution_count?: number | null; code?: string | null; line?: number | null } | null;
  memory?: { budget_bytes?: number | null; peak_bytes?: number | null; source?: string | null } | null;
  memory_exhausted?: boolean;
  evidence?: { [key: string]: unknown } | null;
  kernel_name?: string;
  notebook?: string;
  [key: string]: unknown;
}

export interface IKernelState {
  kernel_id: string;
  guard: 'on' | 'off' | 'absent';
  memory: {
    /** What the guard counts against the budget: its memory group's usage less page cache, else its RSS. */
    used_bytes: number | null;
    /** What `used_bytes` is, in words ("in use in this kernel's own memory group: usage less page cache"). */
    used_source?: string | null;
    rss_bytes?: number | null;
    budget_bytes: number | null;
    source: string | null;
    interrupt_bytes?: number | null;
  } | null;
  deaths: number;
  memory_errors: number;
}

export type Level = 'ok' | 'amber' | 'red' | 'unknown';

/** The fraction of the interrupt line from which the status bar turns amber. */
export const AMBER_FRACTION = 0.7;

/**
 * Return a stable key for one death, so the event and the polling fallback show it once.
 */
export function deathKey(death: IDeath): string {
  if (death.death_id !== undefined && death.death_id !== null) {
    return `${death.kernel_id}#${death.death_id}`;
  }
  if (typeof death.died_at === 'number') {
    // The event and the REST answer carry the same float; rounding guards against re-serialisation.
    return `${death.kernel_id}@${death.died_at.toFixed(3)}`;
  }
  return `${death.kernel_id}:${JSON.stringify(death.exit)}:${death.cell?.execution_count}`;
}

/**
 * Return true when the death was seen by the server alone (a stock kernel, no sentinel supervisor).
 *
 * The server says so in the record; the kernel's own state (`guard: "absent"`) is the second witness.
 */
export function isStockDeath(death: IDeath, guard?: string | null): boolean {
  const ev = death.evidence ?? {};
  if (death['sentinel'] === false || death['stock'] === true || death['kernel_kind'] === 'stock') {
    return true;
  }
  if (ev['source'] === 'server' || ev['stock'] === true) {
    return true;
  }
  return guard === 'absent';
}

/** Return `text` cut at a word boundary to at most `max` characters, with an ellipsis when cut. */
export function clip(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat.length <= max) {
    return flat;
  }
  const cut = flat.slice(0, max - 1);
  const space = cut.lastIndexOf(' ');
  return (space > max / 2 ? cut.slice(0, space) : cut).replace(/[\s,;:.]+$/, '') + '…';
}

const STOCK_HINT = ' Full cause: kernel-sentinel install.';

/**
 * Return the notification's one line (<= 140 characters): the cause as the autopsy said it.
 *
 * For a stock kernel the line keeps room for how to get the full explanation.
 */
export function deathLine(death: IDeath, stock: boolean): string {
  let said = death.summary || death.headline || fallbackCause(death);
  const room = stock ? MAX_MESSAGE - STOCK_HINT.length : MAX_MESSAGE;
  if (said.length > room) {
    // Long asides ("(no flight record: the running cell is not known)") go first; short ones ("(SIGSEGV)") stay.
    said = said.replace(/\s*\([^()]{20,}\)/g, '');
  }
  if (!stock) {
    return clip(said, MAX_MESSAGE);
  }
  return clip(said, MAX_MESSAGE - STOCK_HINT.length) + STOCK_HINT;
}

function fallbackCause(death: IDeath): string {
  const exit = death.exit;
  if (exit?.signal) {
    return `The kernel died of ${exit.signal}.`;
  }
  if (exit && exit.code !== undefined) {
    return `The kernel exited with status ${exit.code}.`;
  }
  return 'The kernel died; the cause is unknown.';
}

/** Return `n` bytes as a short human size (binary units, like the Python side's format_bytes). */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) {
    return '?';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/**
 * Return the status bar's level: red at the guard's interrupt line (or right after a MemoryBudgetError),
 * amber near it, ok below.
 *
 * Without an interrupt line (stock kernel, guard off) the budget stands in for it.
 */
export function memoryLevel(state: IKernelState | null, newMemoryError: boolean): Level {
  const mem = state?.memory;
  if (newMemoryError) {
    return 'red';
  }
  if (!mem || mem.used_bytes === null || mem.used_bytes === undefined) {
    return 'unknown';
  }
  const line = mem.interrupt_bytes || mem.budget_bytes;
  if (!line) {
    return 'ok';
  }
  if (mem.used_bytes >= line) {
    return 'red';
  }
  return mem.used_bytes >= AMBER_FRACTION * line ? 'amber' : 'ok';
}

/** Return the status bar's text: used against budget. */
export function memoryText(state: IKernelState | null): string {
  const mem = state?.memory;
  if (!mem || mem.used_bytes === null || mem.used_bytes === undefined) {
    return 'Mem: ?';
  }
  return `Mem: ${formatBytes(mem.used_bytes)} / ${formatBytes(mem.budget_bytes)}`;
}

/** Return the status bar's tooltip: where the budget comes from, the interrupt line and the guard. */
export function memoryTooltip(state: IKernelState | null, memoryErrors: number): string {
  const mem = state?.memory;
  if (!state || !mem) {
    return 'kernel-sentinel: no memory reading for this kernel';
  }
  const lines = [
    `In use ${formatBytes(mem.used_bytes)} of a ${formatBytes(mem.budget_bytes)} budget` +
      (mem.source ? ` (set by ${mem.source})` : '')
  ];
  if (mem.used_source) {
    // The same figure the guard judges by: the bar turns where the guard's room goes.
    lines.push(`Counted as the guard counts it: ${mem.used_source}.`);
  }
  if (mem.interrupt_bytes) {
    lines.push(`The guard interrupts a cell at ${formatBytes(mem.interrupt_bytes)} (MemoryBudgetError).`);
  }
  lines.push(
    state.guard === 'on'
      ? 'Guard: on.'
      : state.guard === 'off'
        ? 'Guard: off (KERNEL_SENTINEL_GUARD=0): running out of memory kills the kernel.'
        : 'Stock kernel: no guard. `kernel-sentinel install` gives the sentinel kernel.'
  );
  if (memoryErrors) {
    lines.push(`MemoryBudgetErrors in this kernel: ${memoryErrors}.`);
  }
  if (state.deaths) {
    lines.push(`Deaths of this kernel: ${state.deaths}.`);
  }
  return lines.join('\n');
}

/** Return the sections of the Details dialog: [title, text] pairs, evidence last. */
export function detailSections(death: IDeath, stock: boolean): [string, string][] {
  const out: [string, string][] = [];
  out.push(['What happened', death.summary || fallbackCause(death)]);
  const cell = death.cell;
  if (cell && (cell.code || cell.execution_count)) {
    const where = cell.execution_count ? `Cell [${cell.execution_count}]` : 'Cell';
    const line = cell.line ? `, line ${cell.line}` : '';
    out.push([`${where}${line}`, cell.code || '(code not recorded)']);
  }
  const mem = death.memory;
  if (mem && (mem.budget_bytes || mem.peak_bytes)) {
    out.push([
      'Memory',
      `peak ${formatBytes(mem.peak_bytes)}, budget ${formatBytes(mem.budget_bytes)}` +
        (mem.source ? ` (set by ${mem.source})` : '') +
        (death.memory_exhausted ? '; memory ran out' : '')
    ]);
  }
  if (death.exit) {
    out.push(['Exit', death.exit.signal ? `signal ${death.exit.signal}` : `exit code ${death.exit.code}`]);
  }
  if (death.remedy) {
    out.push(['What to do', death.remedy]);
  }
  if (stock) {
    out.push([
      'Full explanation',
      'This kernel is a stock kernel: the server saw only its exit. Install the sentinel kernel ' +
        '(`kernel-sentinel install`) and pick "Python 3 (sentinel)": it keeps the kernel alive when memory runs ' +
        'out and records the cell, the memory and the native stack of every death.'
    ]);
  }
  if (death.evidence) {
    out.push(['Evidence', JSON.stringify(death.evidence, null, 2)]);
  }
  return out;
}

/**
 * Return the one line for the notification after `%sentinel restore`: the names that came back, or the
 * restore's own first line when nothing did (no checkpoint, an error).
 */
export function restoreLine(text: string, ok: boolean): string {
  const restored = text.split('\n').find(l => l.trim().startsWith('restored:'));
  if (ok && restored) {
    const names = restored
      .trim()
      .slice('restored:'.length)
      .split(/\),\s*/)
      .map(part => part.split(' (')[0].trim())
      .filter(Boolean);
    return clip(`Variables back in the new kernel: ${names.join(', ')}`, MAX_MESSAGE);
  }
  return clip(text.split('\n')[0] || 'The restore printed nothing.', MAX_MESSAGE);
}
