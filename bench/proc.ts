/** What Linux's /proc tells the bench of a process it started (Linux only, as the bench). */
import { readFile } from 'node:fs/promises';

/** Resident set size now and its high-water mark, in KB (NaN when the process is gone). */
export function readProcStatus(pid: number): Promise<{ rssKb: number; hwmKb: number }> {
  return readFile(`/proc/${pid}/status`, 'utf8').then(
    (text) => ({
      rssKb: Number(/VmRSS:\s+(\d+)/.exec(text)?.[1] ?? NaN),
      hwmKb: Number(/VmHWM:\s+(\d+)/.exec(text)?.[1] ?? NaN),
    }),
    () => ({ rssKb: NaN, hwmKb: NaN }),
  );
}

/** CPU time (user + system) a process has used, in ms. */
export async function cpuMs(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** Bytes a process has read through read(2) and kin: files, sockets, pipes. */
export async function readProcIo(pid: number): Promise<{ rchar: number }> {
  const text = await readFile(`/proc/${pid}/io`, 'utf8').catch(() => '');
  return { rchar: Number(/rchar:\s+(\d+)/.exec(text)?.[1] ?? NaN) };
}
