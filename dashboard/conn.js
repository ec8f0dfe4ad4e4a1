// The WebSocket to the bridge: connect, reconnect with exponential backoff and jitter,
// and notice a silent connection. Every (re)connection starts with hello + snapshot, so
// the store rebuilds its ring from a fresh snapshot after any gap.
//
// States (the `#conn` hook's data-state):
//   live         open, a snapshot received, something heard in the last STALE_MS;
//   reconnecting closed (or not yet open), the next attempt is scheduled;
//   stale        open but silent for STALE_MS (pings unanswered): the data may be old.

const PING_MS = 10000;
const STALE_MS = 25000;
const DEAD_MS = 45000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

export class Connection {
  /**
   * @param {(msg: object) => void} onMessage
   * @param {(status: {state: string, retryAt: number, attempt: number, lastAt: number}) => void} onStatus
   */
  constructor(onMessage, onStatus, url = defaultUrl()) {
    this.url = url;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.ws = null;
    this.attempt = 0;
    this.retryAt = 0;
    this.lastAt = 0;
    this.ready = false;
    this.state = 'reconnecting';
    this.timer = null;
    setInterval(() => this.tick(), 1000);
  }

  start() {
    this.open();
  }

  open() {
    clearTimeout(this.timer);
    this.ready = false;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastAt = Date.now();
    };
    ws.onmessage = (ev) => {
      this.lastAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return; // not JSON: nothing we can show; the bridge never sends it
      }
      if (msg.type === 'pong') return this.setState(this.ready ? 'live' : this.state);
      if (msg.type === 'snapshot') {
        this.ready = true;
        this.attempt = 0;
      }
      if (msg.type === 'resync') this.ready = false;
      this.onMessage(msg);
      if (this.ready) this.setState('live');
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleRetry();
    };
    ws.onerror = () => {
      // onclose follows and schedules the retry.
    };
  }

  scheduleRetry() {
    this.ready = false;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.open(), delay);
    this.setState('reconnecting');
  }

  /** Reconnect now (the indicator's button), skipping the rest of the backoff. */
  retryNow() {
    if (this.ws) this.ws.close();
    this.ws = null;
    this.attempt = 0;
    this.open();
  }

  tick() {
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      const silent = Date.now() - this.lastAt;
      if (silent > PING_MS / 2) {
        try {
          ws.send('{"type":"ping"}');
        } catch {
          /* closing: onclose handles it */
        }
      }
      if (silent > DEAD_MS) {
        // Silent far too long: drop it and start over from a fresh snapshot.
        this.ws = null;
        ws.close();
        this.scheduleRetry();
        return;
      }
      if (this.ready) this.setState(silent > STALE_MS ? 'stale' : 'live');
    }
    this.onStatus(this.status());
  }

  setState(state) {
    const changed = state !== this.state;
    this.state = state;
    if (changed) this.onStatus(this.status());
  }

  status() {
    return { state: this.state, retryAt: this.retryAt, attempt: this.attempt, lastAt: this.lastAt };
  }
}

function defaultUrl() {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}
