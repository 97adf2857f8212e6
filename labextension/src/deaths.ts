/**
 * Deaths of the kernels of open notebooks -> one notification each, with "Details" and "Restore variables".
 *
 * Two sources, one display: the server's death event (pushed, the fast path) and, when a session's status goes
 * to `autorestarting`/`dead`, polling `GET deaths?kernel_id=` (the fallback when events do not arrive). A death
 * is shown once, by its key. Touched from the browser's single event loop only.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Event, Kernel, KernelMessage } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { fetchDeaths, fetchKernel } from './api';
import { DEATH_SCHEMA, IDeath, deathKey, deathLine, detailSections, isStockDeath, restoreLine } from './format';
import { ServerState } from './server';

/** Delays (ms) after a session reports its kernel dead at which the fallback asks the server for the record. */
const FALLBACK_DELAYS = [1500, 3000, 6000, 12000];

/** How long the restore waits for the restarted kernel to answer. */
const RESTART_WAIT_MS = 60000;

/** How long one kernel_info request may take before it is sent again (one sent to the dead kernel is lost). */
const PROBE_MS = 2000;

export class DeathWatcher {
  constructor(
    private readonly tracker: INotebookTracker,
    private readonly server: ServerState,
    events: Event.IManager
  ) {
    events.stream.connect((_, emission) => {
      if (emission.schema_id === DEATH_SCHEMA) {
        this._onDeath(emission as unknown as IDeath, 'event');
      }
    });
    tracker.widgetAdded.connect((_, panel) => this._watch(panel));
    tracker.forEach(panel => this._watch(panel));
  }

  /** Remember the deaths a kernel already had, so opening a notebook does not replay its history. */
  private async _baseline(kernelId: string): Promise<void> {
    if (this._baselined.has(kernelId)) {
      return;
    }
    this._baselined.add(kernelId);
    if ((await this.server.probe()) !== 'up') {
      return;
    }
    const answer = await fetchDeaths(this.server.settings, kernelId, 20);
    for (const death of answer.data ?? []) {
      this._seen.add(deathKey(death));
    }
  }

  private _watch(panel: NotebookPanel): void {
    const ctx = panel.sessionContext;
    const onKernel = () => {
      const id = ctx.session?.kernel?.id;
      if (id) {
        void this._baseline(id);
      }
    };
    ctx.kernelChanged.connect(onKernel);
    void ctx.ready.then(onKernel);
    ctx.statusChanged.connect((_, status: Kernel.Status) => {
      const id = ctx.session?.kernel?.id;
      if (id && (status === 'autorestarting' || status === 'dead')) {
        this._fallback(id);
      }
    });
  }

  /** Poll for the record of a death the session saw, in case its event never comes. */
  private _fallback(kernelId: string): void {
    const started = Date.now();
    for (const delay of FALLBACK_DELAYS) {
      window.setTimeout(async () => {
        if (this.server.availability === 'missing' || (this._shownAt.get(kernelId) ?? 0) >= started) {
          return;
        }
        const answer = await fetchDeaths(this.server.settings, kernelId, 1);
        if (answer.status !== 200) {
          this.server.note(answer.status, answer.problem);
          return;
        }
        const newest = answer.data?.[0];
        if (newest) {
          this._onDeath(newest, 'poll');
        }
      }, delay);
    }
  }

  private _panelOf(kernelId: string | undefined): NotebookPanel | null {
    let found: NotebookPanel | null = null;
    this.tracker.forEach(panel => {
      if (!found && kernelId && panel.sessionContext.session?.kernel?.id === kernelId) {
        found = panel;
      }
    });
    return found;
  }

  private async _onDeath(death: IDeath, via: 'event' | 'poll'): Promise<void> {
    const key = deathKey(death);
    const panel = this._panelOf(death.kernel_id);
    if (!panel || this._seen.has(key)) {
      return; // not a kernel of an open notebook, or already shown
    }
    this._seen.add(key);
    this._shownAt.set(death.kernel_id as string, Date.now());
    let guard: string | null = null;
    if (!isStockDeath(death)) {
      // The record may not say; the kernel's state does (a stock kernel has no guard at all).
      const state = await fetchKernel(this.server.settings, death.kernel_id as string);
      guard = state.data?.guard ?? null;
    }
    const stock = isStockDeath(death, guard);
    const line = deathLine(death, stock);
    console.info(`kernel-sentinel: death of ${death.kernel_id} shown (via ${via}): ${line}`);
    const actions: Notification.IAction[] = [
      {
        label: 'Details',
        caption: 'The whole explanation, with its evidence',
        callback: event => {
          event.preventDefault(); // keep the notification: "Restore variables" is still to be pressed
          void showDetails(panel, death, stock);
        }
      }
    ];
    if (!stock) {
      actions.push({
        label: 'Restore variables',
        caption: 'Run %sentinel restore in the restarted kernel',
        displayType: 'accent',
        callback: event => {
          event.preventDefault();
          void this._restore(panel, id);
        }
      });
    }
    const id = Notification.emit(line, 'error', { autoClose: false, actions });
    dismissCauselessDialog(panel);
  }

  private async _restore(panel: NotebookPanel, toast: string): Promise<void> {
    Notification.update({ id: toast, message: 'Restoring variables in the restarted kernel…', type: 'in-progress' });
    let text: string;
    let ok = false;
    try {
      const kernel = await this._restartedKernel(panel);
      const reply = await runAndCollect(kernel, '%sentinel restore');
      text = reply.text.trim() || '(the kernel printed nothing)';
      ok = reply.ok && /^Restored/m.test(text);
    } catch (err) {
      text = `The restore could not run: ${err}`;
    }
    Notification.update({
      id: toast,
      message: restoreLine(text, ok),
      type: ok ? 'success' : 'warning',
      autoClose: false,
      actions: []
    });
    await showDialog({
      title: ok ? 'Variables restored' : 'Restore',
      body: preformatted('jp-KernelSentinel-restore', text),
      buttons: [Dialog.okButton({ label: 'Close' })]
    });
  }

  /**
   * Return the notebook's kernel once it is back after the automatic restart of the death that was shown.
   *
   * "Back" is: it answers a kernel_info request. The dead kernel never answers, so the first answer after the
   * death was shown comes from the restarted one. (Following Lab's session statuses instead raced: a restart's
   * statuses can come in an order after which Lab shows no further change until the next execution, and the
   * restore waited its whole minute in one CI run in three.)
   */
  private async _restartedKernel(panel: NotebookPanel): Promise<Kernel.IKernelConnection> {
    const deadline = Date.now() + RESTART_WAIT_MS;
    while (Date.now() < deadline) {
      const kernel = panel.sessionContext.session?.kernel;
      if (kernel && kernel.connectionStatus === 'connected' && kernel.status !== 'dead' && (await answers(kernel))) {
        return kernel;
      }
      await new Promise(resolve => window.setTimeout(resolve, 200));
    }
    throw new Error('the kernel did not come back within 60 s');
  }

  private readonly _seen = new Set<string>();
  private readonly _baselined = new Set<string>();
  private readonly _shownAt = new Map<string, number>();
}

/** How long after a death Lab's own "Kernel Restarting" dialog may still appear (it follows the status). */
const STOCK_DIALOG_WINDOW_MS = 15000;

/**
 * Close Lab's "Kernel Restarting: the kernel for X appears to have died" dialog for this notebook: the
 * notification says the same with the cause. Lab offers no hook to replace it (FACTS.md), so it is matched by
 * its English text and the notebook's path; in another language it simply stays.
 */
function dismissCauselessDialog(panel: NotebookPanel): void {
  const path = panel.sessionContext.session?.path ?? panel.context.path;
  const until = Date.now() + STOCK_DIALOG_WINDOW_MS;
  const closeIfStock = (dialog: Dialog<any>) => {
    const text = dialog.node.textContent ?? '';
    if (text.includes('appears to have died') && text.includes(path)) {
      dialog.resolve();
    }
  };
  Dialog.tracker.forEach(closeIfStock);
  const onAdded = (_: unknown, dialog: Dialog<any>) => {
    if (Date.now() > until) {
      Dialog.tracker.widgetAdded.disconnect(onAdded);
      return;
    }
    // The dialog's content is attached after it is tracked: look once it is on screen.
    window.requestAnimationFrame(() => closeIfStock(dialog));
  };
  Dialog.tracker.widgetAdded.connect(onAdded);
  window.setTimeout(() => Dialog.tracker.widgetAdded.disconnect(onAdded), STOCK_DIALOG_WINDOW_MS);
}

/** Return true when the kernel answers a kernel_info request within PROBE_MS: it is up and its channels work. */
async function answers(kernel: Kernel.IKernelConnection): Promise<boolean> {
  let timer = 0;
  const late = new Promise<null>(resolve => {
    timer = window.setTimeout(() => resolve(null), PROBE_MS);
  });
  try {
    return (await Promise.race([kernel.requestKernelInfo(), late])) != null;
  } catch {
    return false;
  } finally {
    window.clearTimeout(timer);
  }
}

/** Return what an execution printed (streams, results, errors; not displays) and whether it ran ok. */
async function runAndCollect(kernel: Kernel.IKernelConnection, code: string): Promise<{ ok: boolean; text: string }> {
  const parts: string[] = [];
  const future = kernel.requestExecute({ code, store_history: false, allow_stdin: false, silent: false });
  future.onIOPub = (msg: KernelMessage.IIOPubMessage) => {
    const content = msg.content as any;
    switch (msg.header.msg_type) {
      case 'stream':
        parts.push(content.text);
        break;
      case 'execute_result':
        if (content.data?.['text/plain']) {
          parts.push(String(content.data['text/plain']) + '\n');
        }
        break;
      // display_data is left out: the first run after a death displays the death's explanation, already shown.
      case 'error':
        parts.push(`${content.ename}: ${content.evalue}\n`);
        break;
    }
  };
  const reply = await future.done;
  return { ok: reply.content.status === 'ok', text: parts.join('') };
}

function preformatted(className: string, text: string): Widget {
  const body = new Widget();
  body.addClass('jp-KernelSentinel-details');
  body.addClass(className);
  const pre = document.createElement('pre');
  pre.textContent = text;
  body.node.appendChild(pre);
  return body;
}

async function showDetails(panel: NotebookPanel, death: IDeath, stock: boolean): Promise<void> {
  const body = new Widget();
  body.addClass('jp-KernelSentinel-details');
  for (const [title, text] of detailSections(death, stock)) {
    const h = document.createElement('h4');
    h.textContent = title;
    const pre = document.createElement('pre');
    pre.textContent = text;
    body.node.append(h, pre);
  }
  await showDialog({
    title: `Why the kernel of ${panel.context.path.split('/').pop()} died`,
    body,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
