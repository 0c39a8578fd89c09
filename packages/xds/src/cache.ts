// The snapshot cache every ADS stream reads: per resource type, the current encoded resources and a
// version that moves on every change of that type. Writers replace resources in batches; readers
// (streams) hear which names changed and push only if they subscribe to one of them. Identical bytes
// are not a change, so a re-list that finds nothing new pushes nothing.

import { RESOURCE_TYPES, type ResourceTypeUrl } from './protos.js';

export type CacheListener = (type: ResourceTypeUrl, changed: ReadonlySet<string>) => void;

interface Entry {
  readonly bytes: Uint8Array;
  /** The type version at which this resource last changed (delta xDS per-resource version). */
  readonly version: string;
}

interface TypeTable {
  version: number;
  readonly resources: Map<string, Entry>;
}

export class SnapshotCache {
  private readonly tables = new Map<ResourceTypeUrl, TypeTable>();
  private readonly listeners = new Set<CacheListener>();

  constructor() {
    for (const t of RESOURCE_TYPES) this.tables.set(t, { version: 0, resources: new Map() });
  }

  private table(type: ResourceTypeUrl): TypeTable {
    const t = this.tables.get(type);
    if (t === undefined) throw new Error(`unknown resource type ${type}`);
    return t;
  }

  version(type: ResourceTypeUrl): string {
    return String(this.table(type).version);
  }

  get(type: ResourceTypeUrl, name: string): Uint8Array | undefined {
    return this.table(type).resources.get(name)?.bytes;
  }

  /** Version of one resource (moves only when that resource changes); undefined when absent. */
  resourceVersion(type: ResourceTypeUrl, name: string): string | undefined {
    return this.table(type).resources.get(name)?.version;
  }

  has(type: ResourceTypeUrl, name: string): boolean {
    return this.table(type).resources.has(name);
  }

  names(type: ResourceTypeUrl): string[] {
    return [...this.table(type).resources.keys()];
  }

  /**
   * Set (bytes) or delete (undefined) resources of one type. Returns the names that really changed;
   * when any did, the type's version moves once and listeners hear it once.
   */
  update(type: ResourceTypeUrl, entries: Iterable<[string, Uint8Array | undefined]>): Set<string> {
    const t = this.table(type);
    const changed = new Set<string>();
    const next = String(t.version + 1);
    for (const [name, bytes] of entries) {
      const old = t.resources.get(name)?.bytes;
      if (bytes === undefined) {
        if (old !== undefined) {
          t.resources.delete(name);
          changed.add(name);
        }
      } else if (old === undefined || Buffer.compare(old, bytes) !== 0) {
        t.resources.set(name, { bytes, version: next });
        changed.add(name);
      }
    }
    if (changed.size > 0) {
      t.version++;
      for (const l of this.listeners) l(type, changed);
    }
    return changed;
  }

  set(type: ResourceTypeUrl, name: string, bytes: Uint8Array | undefined): boolean {
    return this.update(type, [[name, bytes]]).size > 0;
  }

  onChange(listener: CacheListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
