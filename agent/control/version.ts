/** The agent's version, reported when it joins and in every heartbeat. */
export const AGENT_VERSION = "0.1.0";
