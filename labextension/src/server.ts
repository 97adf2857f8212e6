/**
 * Whether the server extension answers, learned once, and the one message said when it does not.
 *
 * Touched from the browser's single event loop only.
 */
import { Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';

import { fetchDeaths } from './api';

export type Availability = 'unknown' | 'up' | 'missing' | 'unavailable';

export class ServerState {
  constructor(readonly settings: ServerConnection.ISettings) {}

  availability: Availability = 'unknown';
  problem = '';

  /** Return the availability after one probe (`GET deaths?limit=1`); later calls reuse the first answer. */
  probe(): Promise<Availability> {
    if (!this._probing) {
      this._probing = fetchDeaths(this.settings, undefined, 1).then(answer => {
        this.note(answer.status, answer.problem);
        return this.availability;
      });
    }
    return this._probing;
  }

  /**
   * Record what a call answered; the first failure is said once, in the notification centre, and the UI then
   * stays quiet (the notebook works as before, with Jupyter's own dialogs).
   */
  note(status: number, problem: string): void {
    if (status === 200) {
      this.availability = 'up';
      return;
    }
    this.availability = status === 404 ? 'missing' : 'unavailable';
    this.problem = problem;
    if (!this._said) {
      this._said = true;
      console.warn(`kernel-sentinel: ${problem}`);
      // Said short (Lab cuts a toast's text at 140 characters) and true to the case: with the store unreadable
      // (503) the server still sends each death's event with its cause; only without the extension is it lost.
      const said =
        status === 503
          ? 'kernel-sentinel: its store or the autopsy cannot be read (503). The notebook works as before; ' +
            'new deaths are still explained.'
          : `kernel-sentinel: ${problem}. Kernel deaths are shown without their cause.`;
      Notification.warning(said, { autoClose: 8000 });
    }
  }

  private _probing: Promise<Availability> | null = null;
  private _said = false;
}
