// Types of connect.mjs (re-exported by index.mjs).
import { Repo, NetworkAdapter, DocHandle, StorageAdapterInterface, SharePolicy } from "@automerge/automerge-repo"
import type { PeerId, PeerMetadata, Message, UrlHeads, StorageId } from "@automerge/automerge-repo"

export const SUBPROTOCOL: "ventas"
export const SUBPROTOCOL_BEARER_PREFIX: "ventas.bearer."
export const PROTOCOL_VERSION: "1"
export const RECONNECT_DELAY_MS_MIN: number
export const RECONNECT_DELAY_MS_MAX: number
export const WHEN_SAVED_TIMEOUT_MS_DEFAULT: number
export const REFUSAL_REASON_BYTES_MAX: number
/** API route (relative to the WebSocket URL) a browser GETs to learn why an upgrade failed. */
export const PROBE_PATH: "v1/export/status"

/**
 * `connecting`: a WebSocket is opening; `connected`: the server answered
 * `join`; `offline`: waiting to retry after a failure; `auth-refused`: the
 * server refused the credential (retries go on with backoff; `setToken`
 * retries at once); `closed`: `disconnect()` or `repo.shutdown()`.
 */
export type ConnectionState = "connecting" | "connected" | "offline" | "auth-refused" | "closed"

export interface ConnectionEvents {
  state: { state: ConnectionState; reason: string | null }
  /** The server's reason, e.g. `HTTP 401: unauthorized: missing or invalid credential`. */
  "auth-refused": { reason: string | null }
  /** An `error` message from the server (a denied write names its document). */
  "server-error": { message: string }
}

/** Delay before retry `attempt` (0-based), in ms: exponential backoff with full jitter. */
export function reconnectDelayMs(
  attempt: number,
  options?: { minMs?: number; maxMs?: number; random?: () => number },
): number

/** Any WebSocket constructor with the browser's API (browser, `ws`). */
export type WebSocketConstructor = new (url: string, protocols: string[]) => any

export class VentasConnection extends NetworkAdapter {
  constructor(options: { url: string; token: string; WebSocket?: WebSocketConstructor; random?: () => number })
  readonly state: ConnectionState
  readonly reason: string | null
  readonly serverPeerId: PeerId | null
  readonly serverStorageId: StorageId | null
  /** Subscribes; returns the function that unsubscribes. */
  onEvent<E extends keyof ConnectionEvents>(event: E, listener: (payload: ConnectionEvents[E]) => void): () => void
  setToken(token: string): void
  isReady(): boolean
  whenReady(): Promise<void>
  connect(peerId: PeerId, peerMetadata?: PeerMetadata): void
  send(message: Message): void
  disconnect(): void
}

export class VentasRepo extends Repo {
  readonly connection: VentasConnection
  /** The device id this Repo joins as (its peer id is `<device>/<random>`). */
  readonly device: string
  /** Swaps the credential (a renewed token); local documents are kept. */
  setToken(token: string): void
}

export interface ConnectOptions {
  /** `ws://` or `wss://` URL of the server; never with `?token=`. */
  url: string
  /** The device's credential (`ventas token issue`). */
  token: string
  /** The credential's device id. */
  device: string
  /** Where documents persist (IndexedDB, NodeFS, ...); memory if absent. */
  storage?: StorageAdapterInterface
  /** WebSocket constructor; default: the global one, else `ws`. */
  WebSocket?: WebSocketConstructor
  /** Source of jitter in [0, 1). */
  random?: () => number
  sharePolicy?: SharePolicy
}

export function connect(options: ConnectOptions): VentasRepo

export type SaveErrorCode = "timeout" | "denied"

export class SaveError extends Error {
  code: SaveErrorCode
}

/**
 * Resolves (with the server's heads) once the server has acknowledged the
 * handle's heads; rejects with `SaveError` on timeout or a denied write.
 */
export function whenSaved<T>(
  handle: DocHandle<T>,
  options?: { timeoutMs?: number; repo?: VentasRepo },
): Promise<UrlHeads>
