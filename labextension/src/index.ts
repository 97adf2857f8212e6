/**
 * kernel-sentinel in JupyterLab 4 and Notebook 7: why a notebook's kernel died (with its variables back) and
 * its memory against the real budget, from the server extension `kernel_sentinel.server`.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { DeathWatcher } from './deaths';
import { ServerState } from './server';
import { MemoryStatus } from './status';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'kernel-sentinel:plugin',
  description: 'Kernel deaths explained, variables restored, and the memory budget in the status bar.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, statusBar: IStatusBar | null) => {
    const server = new ServerState(app.serviceManager.serverSettings);
    new DeathWatcher(tracker, server, app.serviceManager.events);
    if (statusBar) {
      // Notebook 7 has no status bar: the notifications work there alone.
      const item = new MemoryStatus(tracker, server);
      statusBar.registerStatusItem('kernel-sentinel:memory', {
        item,
        align: 'left',
        rank: 5
      });
      item.start();
    }
    console.info('kernel-sentinel: lab extension active');
  }
};

export default plugin;
