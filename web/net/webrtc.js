/// webrtc.js: the fifth way, as a transport. Chat, presence and history
/// still go through the server over a WebSocket, so the log keeps their
/// order: WebRtcTransport is a WsTransport whose socket also takes signals
/// (`/ws?…&signals=true`) for the page's peer mesh (peers.js), and whose
/// cursor moves go on the mesh's data channels.
///
/// A move goes on every open channel, and through the server too while
/// anyone online has no open channel with us (a `ws` user, a peer still
/// connecting, a peer whose channel failed), so everyone sees every cursor.
/// Incoming, a peer's cursor follows its channel while moves arrive there,
/// else the server. What the log delivers goes to the page's LogFollower,
/// like any transport's; signals and refused signals go to the mesh.

import { PathMetrics } from './path-metrics.js';
import { PeerMesh, fetchIceServers } from './peers.js';
import { WsTransport } from './transports.js';

/**
 * WebRTC: the chat and presence of a WebSocket, with cursors peer to peer.
 * Options beyond a transport's: `me` (our name), `users()` (the names of
 * the others online), `onPeerMove(name, x, y, move, bytes)`,
 * `onPeersChange(link)`, and
 * `mirror`: send every move through the server too, to compare the paths.
 */
export class WebRtcTransport extends WsTransport {
  name = 'webrtc';

  constructor(options, { me, users, onPeerMove = () => {}, onPeersChange = () => {}, mirror = false }) {
    super(options);
    this.users = users;
    this.mirror = mirror;
    this.paths = new PathMetrics();
    this.mesh = null;
    // Signals that arrive before the ICE servers are known wait for them, in order.
    this.ready = fetchIceServers().then((iceServers) => {
      if (this.stopped) return;
      this.mesh = new PeerMesh({
        me,
        iceServers,
        signal: (to, kind, data) => this.sendSignal(to, kind, data),
        onMove: (name, move, bytes) => {
          this.paths.p2pMove(name, move, bytes);
          onPeerMove(name, move.x, move.y, move, bytes);
        },
        onChange: (link) => {
          if (link.state === 'open') this.paths.restart(link.name);
          onPeersChange(link);
        },
      });
    });
  }

  /** The socket takes our session's signals. */
  socketParams() {
    return { signals: true };
  }

  /**
   * Everything the socket delivers: signals and refused signals go to the
   * mesh, the rest to the follower. The mesh acts on a log event only once
   * the follower has taken it as new, so a resumed socket's repeats are
   * neither measured nor acted on twice.
   */
  receive(message) {
    if (this.stopped) return;
    const later = (act) => this.ready.then(() => this.mesh && act(this.mesh));
    if (message.type === 'signal') return later((mesh) => mesh.onSignal(message));
    if (message.type === 'error' && message.to) return later((mesh) => mesh.onRefused(message.to, message.code));
    // A newcomer offers to everyone already here; later arrivals offer to us.
    if (message.type === 'hello') later((mesh) => mesh.sync(this.users()));
    if (!this.follower.receive(message) || message.seq === undefined) return;
    if (message.type === 'leave') later((mesh) => mesh.remove(message.name));
    if (message.type === 'mousemove') this.paths.serverMove(message.name, message.x, message.y);
  }

  sendSignal(to, kind, data) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: 'signal', to, kind, data }));
    }
  }

  /** Sends a message through the server on the socket, whatever the channels: a publisher's every event. */
  publish(message) {
    return super.send(message);
  }

  /** Sends a move on every open channel, and nowhere else. */
  sendPeers(x, y) {
    this.mesh?.broadcast(x, y);
  }

  /** Moves go on every open channel, and through the server while anyone online lacks one. */
  send(message) {
    if (message.type !== 'mousemove') return super.send(message);
    this.sendPeers(message.x, message.y);
    if (this.mirror || !this.users().every((name) => this.mesh?.isOpen(name))) return super.send(message);
    return Promise.resolve({});
  }

  /** Whether `name`'s cursor comes over its channel, so its server copies are not drawn. */
  ownsCursor(name) {
    return Boolean(this.mesh?.isOpen(name)) && this.paths.isFresh(name);
  }

  /** Every peer's channel: [{name, state, reason}]. */
  peers() {
    return this.mesh?.peers() ?? [];
  }

  stop() {
    super.stop();
    this.mesh?.close();
  }
}
