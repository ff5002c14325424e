// A small event emitter: on(name, fn), off(name, fn?), once(name, fn).
export class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  on(name, fn) {
    if (typeof fn !== "function") throw new TypeError("handler must be a function");
    let list = this._handlers.get(name);
    if (!list) this._handlers.set(name, (list = []));
    list.push(fn);
    return this;
  }

  /** Removes one handler, or every handler of `name` when fn is omitted. */
  off(name, fn) {
    if (fn === undefined) {
      this._handlers.delete(name);
      return this;
    }
    const list = this._handlers.get(name);
    if (list) {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  once(name, fn) {
    const wrapper = (data) => {
      this.off(name, wrapper);
      fn(data);
    };
    return this.on(name, wrapper);
  }

  _emit(name, data) {
    const list = this._handlers.get(name);
    if (!list) return;
    for (const fn of [...list]) {
      try {
        fn(data);
      } catch (e) {
        // An application handler's exception must not break the protocol engine.
        console.error(`hummer: a '${name}' handler threw`, e);
      }
    }
  }
}
