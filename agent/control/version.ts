/** The agent's version, reported when it joins and in its reports. 0.2: heartbeats to the liveness table. */
export const AGENT_VERSION = "0.2.0";
