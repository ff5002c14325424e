// hummer-channel: the JavaScript client of the Hummer Channel protocol, version 2.
export {
  Hummer, ConnectionState, ConnectionReason, ErrorCode, SUBPROTOCOL,
} from "./hummer.js";
export { Client, Channel } from "./client.js";
export { PROTOCOL_VERSION } from "./codec.js";
import { Hummer } from "./hummer.js";
export default Hummer;
