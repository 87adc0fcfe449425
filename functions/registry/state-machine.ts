/**
 * A state machine written once as a table of allowed transitions. Staying
 * in the same state is not a transition and is not listed.
 */

export class TransitionRefused extends Error {
  readonly machine: string;
  readonly from: string;
  readonly to: string;

  constructor(machine: string, from: string, to: string) {
    super(`${machine}: ${from} -> ${to} is not allowed`);
    this.name = "TransitionRefused";
    this.machine = machine;
    this.from = from;
    this.to = to;
  }
}

export interface StateMachine<S extends string> {
  readonly name: string;
  readonly transitions: Readonly<Record<S, readonly S[]>>;
  /** Whether `from -> to` is in the table. */
  allows(from: S, to: S): boolean;
  /** Throw `TransitionRefused` unless `from -> to` is in the table. */
  check(from: S, to: S): void;
}

export function stateMachine<S extends string>(
  name: string,
  transitions: Readonly<Record<S, readonly S[]>>,
): StateMachine<S> {
  return {
    name,
    transitions,
    allows: (from, to) => transitions[from].includes(to),
    check(from, to) {
      if (!transitions[from].includes(to)) throw new TransitionRefused(name, from, to);
    },
  };
}
