// Runs graphql-http's GraphQL-over-HTTP audits against the server at ROLLCALL_URL. Fails on
// any error or warning; notices are printed, and the README lists the ones left with why.
import { auditServer } from 'graphql-http';

const url = process.env.ROLLCALL_URL;
if (!url) {
  console.error('ROLLCALL_URL is not set');
  process.exit(2);
}
const results = await auditServer({ url });
const count = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const result of results) {
  count[result.status] += 1;
  if (result.status !== 'ok') {
    const detail = 'reason' in result ? ` (${result.reason})` : '';
    console.log(`${result.status.toUpperCase()} ${result.id}: ${result.name}${detail}`);
  }
}
console.log(`graphql-http audit: ${count.ok} ok, ${count.notice} notices, ${count.warn} warnings, ${count.error} errors`);
process.exit(count.warn + count.error > 0 ? 1 : 0);
