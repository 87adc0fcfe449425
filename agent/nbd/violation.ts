/**
 * A client broke a MUST of the protocol in a way the server cannot answer
 * with an error reply (bad magic, unknown client flags, an option a
 * non-fixed client may not send, an unknown export via NBD_OPT_EXPORT_NAME).
 * The only response is to drop that one connection.
 */
export class ProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolViolation";
  }
}

/**
 * The server will not serve this client (a connection limit is reached) and
 * the protocol leaves no error reply to say so (NBD_OPT_EXPORT_NAME): the
 * connection is dropped. Clients that use NBD_OPT_GO get NBD_REP_ERR_POLICY
 * with the reason instead.
 */
export class ConnectionRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConnectionRefused";
  }
}

/** The peer closed (or reset) the connection while the server waited for bytes. */
export class ConnectionClosed extends Error {
  constructor(message = "connection closed by peer") {
    super(message);
    this.name = "ConnectionClosed";
  }
}
