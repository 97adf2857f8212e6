/**
 * The REST calls to the server extension (`/api/kernel-sentinel/...`), behind the server's own auth.
 *
 * Every call answers `{status, data}` and never throws: a missing extension (404), an unreachable store (503)
 * or a network error becomes a status the caller reports once, so the notebook keeps working as before.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IDeath, IKernelState } from './format';

export interface IAnswer<T> {
  /** HTTP status, or 0 when the request did not reach the server. */
  status: number;
  data: T | null;
  /** One line for the user when status is not 200. */
  problem: string;
}

async function get<T>(settings: ServerConnection.ISettings, path: string): Promise<IAnswer<T>> {
  const url = URLExt.join(settings.baseUrl, 'api/kernel-sentinel', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, {}, settings);
  } catch (err) {
    return { status: 0, data: null, problem: `the server could not be reached (${err})` };
  }
  if (response.status !== 200) {
    let reason = '';
    try {
      const body = await response.json();
      reason = body?.message || body?.reason || '';
    } catch {
      // 404 from a server without the extension answers HTML: the status says enough.
    }
    return { status: response.status, data: null, problem: problemText(response.status, reason) };
  }
  try {
    return { status: 200, data: (await response.json()) as T, problem: '' };
  } catch (err) {
    return { status: 200, data: null, problem: `the server extension answered something that is not JSON (${err})` };
  }
}

function problemText(status: number, reason: string): string {
  const why = reason ? `: ${reason}` : '';
  if (status === 404) {
    return `the server extension is not running on this server (404)${why}`;
  }
  if (status === 503) {
    return `the store or the autopsy is unavailable (503)${why}`;
  }
  if (status === 403) {
    return `the server extension refused this user (403)${why}`;
  }
  return `the server extension answered ${status}${why}`;
}

/** Return the newest deaths (of one kernel), newest first. */
export function fetchDeaths(
  settings: ServerConnection.ISettings,
  kernelId?: string,
  limit = 5
): Promise<IAnswer<IDeath[]>> {
  const query = URLExt.objectToQueryString(kernelId ? { kernel_id: kernelId, limit } : { limit });
  return get<IDeath[]>(settings, `deaths${query}`);
}

/** Return one kernel's guard, memory and counts. */
export function fetchKernel(settings: ServerConnection.ISettings, kernelId: string): Promise<IAnswer<IKernelState>> {
  return get<IKernelState>(settings, `kernels/${encodeURIComponent(kernelId)}`);
}
