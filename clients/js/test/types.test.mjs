// meetup.d.ts against a program that uses every part of the API (test/types/usage.ts), compiled with tsc.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { promisify } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));

test('the declarations type-check the usage program, and refuse its wrong calls', async () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const run = promisify(execFile)(process.execPath, [tsc, '-p', path.join(HERE, 'types')], { cwd: path.join(HERE, '..') });
  const { stdout, stderr } = await run.catch((err) => err);
  assert.equal(`${stdout}${stderr}`, '', 'tsc reports nothing');
});
