// The autoscaler panel: current and desired replicas, every metric against its target,
// the last decision with its reason and time. The decision shown is the last one at or
// before the shown point of the stream.

import { num, absTime, relTime, h } from './format.js';

export function renderScale(root, entry, servingMembers, onJump) {
  const body = root.querySelector('.body');
  if (!entry) {
    body.replaceChildren(
      h('p', { class: 'muted', text: 'No scale decision yet: the autoscaler has not decided, or it does not run (it needs Prometheus).' }),
      h('p', {}, `Serving members now: ${servingMembers}`),
    );
    return;
  }
  const b = entry.body || {};
  const cur = Number(b.currentReplicas) || 0;
  const want = Number(b.desiredReplicas) || 0;
  const dir = want > cur ? 'scale up' : want < cur ? 'scale down' : 'hold';
  const metrics = b.metrics && b.metrics.length ? b.metrics : b.metric && b.metric !== 'manual' ? [{ name: b.metric, value: b.metricValue, target: b.targetValue, proposedReplicas: want, targetType: '' }] : [];
  const rows = metrics.map((m) => {
    const value = Number(m.value) || 0;
    const target = Number(m.target) || 0;
    const ratio = target > 0 ? value / target : 0;
    return h(
      'li',
      { class: 'metric-row' },
      h('span', { class: 'name', text: `${m.name || 'metric'}${m.targetType ? ` (${m.targetType})` : ''}` }),
      m.unavailable
        ? h('span', { class: 'muted', text: `no value: ${m.unavailable}` })
        : h('span', {}, `${num(value, 2)} of target ${num(target, 2)} → ${Number(m.proposedReplicas) || 0} replicas`),
      h('span', { class: 'gauge', role: 'img', 'aria-label': `${Math.round(ratio * 100)}% of target` }, h('span', { class: `fill ${ratio > 1 ? 'over' : ''}`, style: `width:${Math.min(100, ratio * 50)}%` }), h('span', { class: 'mark' })),
    );
  });
  body.replaceChildren(
    h('p', { class: 'replicas' }, h('strong', { text: String(cur) }), ' → ', h('strong', { text: String(want) }), ` replicas (${dir})`, h('span', { class: 'muted', text: ` · serving members: ${servingMembers}` })),
    rows.length ? h('ul', { class: 'metrics' }, rows) : h('p', { class: 'muted', text: !b.metric || b.metric === 'manual' ? 'A manual decision: no metric was evaluated.' : `Decided on ${b.metric}.` }),
    h('p', {}, h('span', { class: 'muted', text: 'Reason: ' }), b.reason || '—'),
    h(
      'p',
      { class: 'muted' },
      'Decided ',
      h('time', { title: absTime(entry.time), text: `${relTime(entry.time)} (${absTime(entry.time)})` }),
      entry.seq ? ' · ' : '',
      entry.seq ? h('button', { type: 'button', class: 'link', onclick: () => onJump(entry.seq), text: `seq ${entry.seq}` }) : '',
    ),
  );
}
