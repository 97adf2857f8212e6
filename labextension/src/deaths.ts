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
import { DEATH_SCHEMA, IDeath, deathKey, deathLine, detailSections, isStockDeath } from './format';
import { ServerState } from './server';

/** Delays (ms) after a session reports its kernel dead at which the fallback asks the server for the record. */
const FALLBACK_DELAYS = [1500, 3000, 6000, 12000];

/** How long the restore waits for the restarted kernel to be idle. */
const RESTART_WAIT_MS = 60000;

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
  }

  private async _restore(panel: NotebookPanel, toast: string): Promise<void> {
    Notification.update({ id: toast, message: 'Restoring variables in the restarted kernel…', type: 'in-progress' });
    let text: string;
    let ok = false;
    try {
      const kernel = await restartedKernel(panel);
      const reply = await runAndCollect(kernel, '%sentinel restore');
      text = reply.text.trim() || '(the kernel printed nothing)';
      ok = reply.ok && /^Restored/m.test(text);
    } catch (err) {
      text = `The restore could not run: ${err}`;
    }
    const first = text.split('\n')[0];
    Notification.update({
      id: toast,
      message: first.length > 140 ? first.slice(0, 139) + '…' : first,
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

  private readonly _seen = new Set<string>();
  private readonly _baselined = new Set<string>();
  private readonly _shownAt = new Map<string, number>();
}

/** Return the notebook's kernel once it is back and idle after the automatic restart. */
async function restartedKernel(panel: NotebookPanel): Promise<Kernel.IKernelConnection> {
  const deadline = Date.now() + RESTART_WAIT_MS;
  while (Date.now() < deadline) {
    const kernel = panel.sessionContext.session?.kernel;
    if (kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected') {
      return kernel;
    }
    await new Promise(resolve => window.setTimeout(resolve, 200));
  }
  throw new Error('the kernel did not come back within 60 s');
}

/** Return what a silent-to-history execution printed (streams, results, errors) and whether it ran ok. */
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
      case 'display_data':
        if (content.data?.['text/plain']) {
          parts.push(String(content.data['text/plain']) + '\n');
        }
        break;
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
