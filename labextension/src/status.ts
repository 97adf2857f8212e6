/**
 * The status bar item: the active notebook's kernel memory against its real budget.
 *
 * Polls `GET /api/kernel-sentinel/kernels/ID` every few seconds, only while a notebook is active and the page
 * visible; stops for good when the server extension is missing. Touched from the browser's event loop only.
 */
import { INotebookTracker } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { fetchKernel } from './api';
import { IKernelState, Level, memoryLevel, memoryText, memoryTooltip } from './format';
import { ServerState } from './server';

const POLL_MS = 2000;
/** After a 503 the store may come back: ask again, rarely, without saying anything more. */
const UNAVAILABLE_POLL_MS = 30000;
/** A new MemoryBudgetError keeps the item red this long: the guard freed the memory, the user must see it. */
const RED_AFTER_ERROR_MS = 20000;

export class MemoryStatus extends Widget {
  constructor(
    private readonly tracker: INotebookTracker,
    private readonly server: ServerState
  ) {
    super();
    this.addClass('jp-KernelSentinel-memory');
    this.node.dataset.level = 'unknown';
    this.node.textContent = 'Mem: …';
    tracker.currentChanged.connect(() => this._kick());
  }

  /** Start polling (idempotent). */
  start(): void {
    this._kick();
  }

  private _kick(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this._timer = window.setTimeout(() => void this._tick(), 50);
  }

  private async _tick(): Promise<void> {
    this._timer = null;
    const availability = await this.server.probe();
    if (availability === 'missing') {
      this._show('off', 'Mem: n/a', `kernel-sentinel: ${this.server.problem}`);
      return; // said once by ServerState; no more requests
    }
    let next = POLL_MS;
    const panel = this.tracker.currentWidget;
    const kernelId = panel?.sessionContext.session?.kernel?.id;
    if (!panel || !panel.isVisible || document.hidden || !kernelId) {
      this.setHidden(!panel);
    } else {
      this.setHidden(false);
      const answer = await fetchKernel(this.server.settings, kernelId);
      if (answer.status === 200 && answer.data) {
        this.server.note(200, '');
        this._render(kernelId, answer.data);
      } else if (answer.status === 404 && this.server.availability === 'up') {
        this._show('unknown', 'Mem: ?', 'kernel-sentinel does not know this kernel (yet)');
      } else {
        this.server.note(answer.status, answer.problem);
        this._show('off', 'Mem: n/a', `kernel-sentinel: ${answer.problem}`);
        next = UNAVAILABLE_POLL_MS;
      }
    }
    if (this._timer === null) {
      this._timer = window.setTimeout(() => void this._tick(), next);
    }
  }

  private _render(kernelId: string, state: IKernelState): void {
    const before = this._errors.get(kernelId);
    this._errors.set(kernelId, state.memory_errors);
    if (before !== undefined && state.memory_errors > before) {
      this._redUntil.set(kernelId, Date.now() + RED_AFTER_ERROR_MS);
    }
    const recentError = (this._redUntil.get(kernelId) ?? 0) > Date.now();
    const text = memoryText(state) + (recentError ? ' · MemoryBudgetError' : '');
    this._show(memoryLevel(state, recentError), text, memoryTooltip(state, state.memory_errors));
  }

  private _show(level: Level | 'off', text: string, tooltip: string): void {
    this.node.dataset.level = level;
    this.node.textContent = text;
    this.node.title = tooltip;
  }

  private _timer: number | null = null;
  private readonly _errors = new Map<string, number>();
  private readonly _redUntil = new Map<string, number>();
}
