// The rebalance card: the last rebalance at or before the shown point, how much of the
// key space it moved against the ideal, who gave ranges to whom, and the handoffs of its
// keys (count, bytes, duration) as nodes report them.

import { rebalanceDetail } from './state.js';
import { pct, share, count, bytes, duration, parseDuration, absTime, relTime, h } from './format.js';
import { colourOf } from './palette.js';

const MAX_PAIRS = 12;

const who = (id) => h('span', { class: 'who' }, h('span', { class: 'swatch', style: `background:${colourOf(id)}`, 'aria-hidden': 'true' }), id ?? 'nobody');

export function renderRebalance(root, entry, handoffs, onJump) {
  const body = root.querySelector('.body');
  if (!entry) {
    body.replaceChildren(h('p', { class: 'muted', text: 'No rebalance yet at this point of the stream.' }));
    return;
  }
  const b = entry.body;
  const { pairs } = rebalanceDetail(entry);
  const moved = Number(b.movedFraction) || 0;
  const ideal = Number(b.idealFraction) || 0;
  const ratio = ideal > 0 ? moved / ideal : null;
  const changes = [...(b.joined || []).map((x) => `+${x} joined`), ...(b.departed || []).map((x) => `−${x} left`), ...(b.reweighted || []).map((x) => `${x} reweighted`)];
  const shownPairs = pairs.slice(0, MAX_PAIRS);
  const table = h(
    'table',
    { class: 'pairs' },
    h('caption', { class: 'sr-only', text: 'Key space moved, by old and new owner' }),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'From' }), h('th', { scope: 'col', text: '' }), h('th', { scope: 'col', text: 'To' }), h('th', { scope: 'col', class: 'num', text: 'Key space' }), h('th', { scope: 'col', class: 'num', text: 'Ranges' }))),
    h('tbody', {}, shownPairs.map((p) => h('tr', {}, h('td', {}, who(p.from)), h('td', { 'aria-hidden': 'true', text: '→' }), h('td', {}, who(p.to)), h('td', { class: 'num', text: share(p.fraction) }), h('td', { class: 'num', text: count(p.ranges) })))),
  );
  const more = pairs.length > MAX_PAIRS ? h('p', { class: 'muted', text: `and ${pairs.length - MAX_PAIRS} more pairs` }) : null;
  const handoffRows = handoffs.map((x) => {
    const hb = x.body;
    return h('tr', {}, h('td', {}, who(hb.from)), h('td', { 'aria-hidden': 'true', text: '→' }), h('td', {}, who(hb.to)), h('td', { class: 'num', text: count(Number(hb.count) || 0) }), h('td', { class: 'num', text: bytes(Number(hb.bytes) || 0) }), h('td', { class: 'num', text: duration(parseDuration(hb.duration)) }));
  });
  const totalKeys = handoffs.reduce((a, x) => a + (Number(x.body.count) || 0), 0);
  const parts = [
    h('p', { class: 'headline' }, h('button', { type: 'button', class: 'link', onclick: () => onJump(entry.seq), text: `Epoch ${entry.epoch}` }), ` · seq ${entry.seq} · `, h('time', { title: absTime(entry.time), text: relTime(entry.time) })),
    h(
      'p',
      { class: 'moved' },
      `moved ${pct(moved)} of the key space (ideal ${pct(ideal)})`,
      ratio !== null ? h('span', { class: `badge ${ratio > 1.5 ? 'warn' : 'ok'}`, text: ratio > 1.5 ? `${ratio.toFixed(1)}× ideal` : 'near ideal' }) : null,
    ),
    h('div', { class: 'movebar', role: 'img', 'aria-label': `moved ${pct(moved)}, ideal ${pct(ideal)}` }, h('span', { class: 'fill', style: `width:${Math.min(100, moved * 100)}%` }), h('span', { class: 'ideal', style: `left:${Math.min(100, ideal * 100)}%` })),
    h('p', { class: 'muted', text: changes.join(', ') || 'No member changes (configuration only).' }),
    pairs.length ? table : h('p', { class: 'muted', text: 'No range changed owner.' }),
    more,
    h('h3', { text: `Handoffs${handoffs.length ? ` (${count(totalKeys)} keys)` : ''}` }),
    handoffs.length
      ? h('table', { class: 'pairs' }, h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'From' }), h('th', { scope: 'col', text: '' }), h('th', { scope: 'col', text: 'To' }), h('th', { scope: 'col', class: 'num', text: 'Keys' }), h('th', { scope: 'col', class: 'num', text: 'Bytes' }), h('th', { scope: 'col', class: 'num', text: 'Took' }))), h('tbody', {}, handoffRows))
      : h('p', { class: 'muted', text: 'No handoff reported for this epoch yet.' }),
  ];
  body.replaceChildren(...parts.filter(Boolean));
}
