// Member colours: Okabe-Ito and Paul Tol's colour-blind-safe sets, brightest first so
// that small rings get the most distinct hues. A member keeps its colour for the whole
// session (assigned on first sight), so it does not change when others join or leave or
// when time travel shows an older ring. Colour is never the only cue: every coloured
// thing also carries the member's id as text (table, legend, tooltip, labels).

const COLOURS = [
  '#56B4E9', // sky blue
  '#E69F00', // orange
  '#009E73', // bluish green
  '#F0E442', // yellow
  '#CC79A7', // reddish purple
  '#D55E00', // vermillion
  '#0072B2', // blue
  '#44AA99', // teal
  '#DDCC77', // sand
  '#AA4499', // purple
  '#88CCEE', // cyan
  '#999933', // olive
];

const NOBODY = '#6b7280';
const assigned = new Map();

/** The stable colour of a member id (grey for "nobody"). */
export function colourOf(id) {
  if (id === null || id === undefined) return NOBODY;
  let c = assigned.get(id);
  if (c === undefined) {
    c = assigned.size % COLOURS.length;
    assigned.set(id, c);
  }
  return COLOURS[c];
}

/** The palette slot of a member id, for batching draws by colour. */
export function slotOf(id) {
  colourOf(id);
  return id === null || id === undefined ? COLOURS.length : assigned.get(id);
}

/** Every colour by slot; the last slot is "nobody". */
export const SLOTS = [...COLOURS, NOBODY];
